#!/usr/bin/env python3
"""Generates the demo site (a small quotes site in the style of
quotes.toscrape.com) that `make up` scrapes. Deterministic; output in site/."""
import html, os, sys

QUOTES = [
    ("The world as we have created it is a process of our thinking.", "Albert Einstein", ["change", "thinking"]),
    ("It is our choices that show what we truly are, far more than our abilities.", "J.K. Rowling", ["abilities", "choices"]),
    ("There are only two ways to live your life.", "Albert Einstein", ["inspirational", "life"]),
    ("The person who does not enjoy a good novel must be intolerably stupid.", "Jane Austen", ["books", "humor"]),
    ("Imperfection is beauty, madness is genius.", "Marilyn Monroe", ["be-yourself", "inspirational"]),
    ("Try not to become a man of success. Rather become a man of value.", "Albert Einstein", ["adulthood", "value"]),
    ("It is better to be hated for what you are than loved for what you are not.", "Andre Gide", ["life", "love"]),
    ("I have not failed. I have just found 10,000 ways that won't work.", "Thomas A. Edison", ["failure", "humor"]),
    ("A woman is like a tea bag; you never know how strong it is until it's in hot water.", "Eleanor Roosevelt", ["misattributed"]),
    ("A day without sunshine is like, you know, night.", "Steve Martin", ["humor", "obvious"]),
    ("This life is what you make it.", "Marilyn Monroe", ["friends", "life"]),
    ("It takes a great deal of bravery to stand up to our enemies.", "J.K. Rowling", ["courage", "friends"]),
]
BORN = {
    "Albert Einstein": "March 14, 1879", "J.K. Rowling": "July 31, 1965",
    "Jane Austen": "December 16, 1775", "Marilyn Monroe": "June 01, 1926",
    "Andre Gide": "November 22, 1869", "Thomas A. Edison": "February 11, 1847",
    "Eleanor Roosevelt": "October 11, 1884", "Steve Martin": "August 14, 1945",
}
PER_PAGE = 4

def slug(name):
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")

def page(body, title="Quotes to Scrape"):
    return f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"UTF-8\"><title>{title}</title></head>\n<body><div class=\"container\">\n{body}\n</div></body></html>\n"

def main(out):
    pages = [QUOTES[i:i + PER_PAGE] for i in range(0, len(QUOTES), PER_PAGE)]
    for n, quotes in enumerate(pages, 1):
        items = []
        for text, author, tags in quotes:
            t = "".join(f'<a class="tag" href="/tag/{g}/">{g}</a> ' for g in tags)
            items.append(
                f'<div class="quote" itemscope>\n  <span class="text">\u201c{html.escape(text)}\u201d</span>\n'
                f'  <span>by <small class="author">{html.escape(author)}</small>\n'
                f'  <a href="/author/{slug(author)}/">(about)</a></span>\n'
                f'  <div class="tags">Tags: {t}</div>\n</div>')
        nav = '<nav><ul class="pager">'
        if n > 1:
            nav += f'<li class="previous"><a href="/page/{n - 1}/">Previous</a></li>'
        if n < len(pages):
            nav += f'<li class="next"><a href="/page/{n + 1}/">Next</a></li>'
        nav += "</ul></nav>"
        path = os.path.join(out, "index.html" if n == 1 else f"page/{n}/index.html")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(page("<h1>Quotes</h1>\n" + "\n".join(items) + "\n" + nav))
    for author, born in BORN.items():
        path = os.path.join(out, f"author/{slug(author)}/index.html")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(page(f'<div class="author-details"><h3 class="author-title">{html.escape(author)}</h3>\n'
                         f'<p>Born: <span class="author-born-date">{born}</span></p></div>', author))

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "site"))
