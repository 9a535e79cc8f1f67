#!/usr/bin/env python3
"""Writes a deterministic benchmark corpus: N quote-listing pages and N
product-listing pages (realistic quotes.toscrape / books.toscrape-like markup
with navigation, sidebars and footers), 10-20 items each, >= 5 fields per item.
Usage: gen_corpus.py OUTDIR [PAGES_PER_KIND]   (default 120 → 240 pages)"""
import os
import random
import sys

out = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 120
os.makedirs(out, exist_ok=True)
rnd = random.Random(20261122)
WORDS = ("world life love truth time mind heart light dream hope friend book night "
         "day change thinking miracle person choice ability beauty genius madness "
         "silence reason journey courage wisdom river mountain star ocean").split()
AUTHORS = ["Albert Einstein", "Jane Austen", "Mark Twain", "André Gide", "Marilyn Monroe",
           "J.K. Rowling", "Eleanor Roosevelt", "Thomas A. Edison", "Steve Martin",
           "George Eliot", "Charles Bukowski", "Dr. Seuss", "Oscar Wilde", "Albert Camus"]
RATINGS = ["One", "Two", "Three", "Four", "Five"]

def sentence(k):
    return " ".join(rnd.choice(WORDS) for _ in range(k)).capitalize() + "."

def chrome_top(title):
    nav = "".join('<li><a href="/cat/%s_%d/index.html">%s</a></li>\n' % (w, i, w.title())
                  for i, w in enumerate(rnd.sample(WORDS, 12)))
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="UTF-8">\n'
            '<title>%s</title>\n<link rel="stylesheet" href="/static/main.css">\n'
            '<script>window.dataLayer = window.dataLayer || []; function gtag(){dataLayer.push(arguments);}</script>\n'
            '</head>\n<body>\n<div class="container">\n<div class="row header-box">\n'
            '<div class="col-md-8"><h1><a href="/" style="text-decoration: none">%s</a></h1></div>\n'
            '<div class="col-md-4"><p><a href="/login">Login</a></p></div>\n</div>\n'
            '<aside class="sidebar"><ul class="nav nav-list">\n%s</ul></aside>\n'
            '<div class="row"><div class="col-md-8">\n' % (title, title, nav))

def chrome_bottom(page, last, base):
    nxt = ('<li class="next"><a href="%s%d/">Next <span aria-hidden="true">&rarr;</span></a></li>'
           % (base, page + 1)) if page < last else ""
    prv = ('<li class="previous"><a href="%s%d/"><span aria-hidden="true">&larr;</span> Previous</a></li>'
           % (base, page - 1)) if page > 1 else ""
    tags = "".join('<span class="tag-item"><a class="tag" style="font-size: %dpx" href="/tag/%s/">%s</a></span>\n'
                   % (28 - i, w, w) for i, w in enumerate(rnd.sample(WORDS, 10)))
    return ('<nav><ul class="pager">%s%s</ul></nav>\n</div>\n'
            '<div class="col-md-4 tags-box"><h2>Top Ten tags</h2>\n%s</div>\n</div>\n</div>\n'
            '<footer class="footer"><div class="container"><p class="text-muted">'
            'Quotes by: <a href="https://www.goodreads.com/quotes">GoodReads.com</a></p>'
            '<p class="copyright">Made with <span class="zyte">&#10084;</span> by '
            '<a href="https://www.zyte.com">Zyte</a></p></div></footer>\n</body>\n</html>\n'
            % (prv, nxt, tags))

def quotes_page(p):
    s = [chrome_top("Quotes to Scrape")]
    for _ in range(rnd.randint(10, 20)):
        author = rnd.choice(AUTHORS)
        slug = author.replace(".", "").replace(" ", "-")
        tags = rnd.sample(WORDS, rnd.randint(0, 6))
        s.append('<div class="quote" itemscope itemtype="http://schema.org/CreativeWork">\n'
                 '<span class="text" itemprop="text">&ldquo;%s %s&rdquo;</span>\n'
                 '<span>by <small class="author" itemprop="author">%s</small>\n'
                 '<a href="/author/%s">(about)</a>\n</span>\n'
                 '<span class="likes">%d likes</span>\n'
                 '<div class="tags">\nTags:\n<meta class="keywords" itemprop="keywords" content="%s" />\n%s</div>\n</div>\n'
                 % (sentence(rnd.randint(8, 30)), sentence(rnd.randint(4, 12)), author, slug,
                    rnd.randint(0, 20000), ",".join(tags),
                    "".join('<a class="tag" href="/tag/%s/page/1/">%s</a>\n' % (t, t) for t in tags)))
    s.append(chrome_bottom(p, n, "/page/"))
    return "".join(s)

def products_page(p):
    s = [chrome_top("All products | Books to Scrape - Sandbox"), '<section><ol class="row">\n']
    for i in range(20):
        title = sentence(rnd.randint(2, 7))[:-1]
        slug = title.lower().replace(" ", "-")
        stock = rnd.random() < 0.8
        s.append('<li class="col-xs-6 col-sm-4 col-md-3 col-lg-3">\n'
                 '<article class="product_pod" data-sku="SKU-%d-%d">\n'
                 '<div class="image_container"><a href="catalogue/%s_%d/index.html">'
                 '<img src="media/cache/%02x/%02x/%08x.jpg" alt="%s" class="thumbnail"></a></div>\n'
                 '<p class="star-rating %s"><i class="icon-star"></i><i class="icon-star"></i></p>\n'
                 '<h3><a href="catalogue/%s_%d/index.html" title="%s">%s</a></h3>\n'
                 '<div class="product_price">\n<p class="price_color">&pound;%s</p>\n'
                 '<p class="%s availability">\n<i class="icon-%s"></i>\n    %s\n</p>\n'
                 '<form><button type="submit" class="btn btn-primary btn-block">Add to basket</button></form>\n'
                 '</div>\n</article>\n</li>\n'
                 % (p, i, slug, p * 100 + i, rnd.randrange(256), rnd.randrange(256),
                    rnd.randrange(1 << 32), title, rnd.choice(RATINGS), slug, p * 100 + i, title,
                    title[:20] + ("..." if len(title) > 20 else ""),
                    "{:,.2f}".format(rnd.uniform(5, 1500)),
                    "instock" if stock else "outofstock", "ok" if stock else "remove",
                    "In stock" if stock else "Out of stock"))
    s.append('</ol></section>\n')
    s.append(chrome_bottom(p, n, "/catalogue/page-"))
    return "".join(s)

for p in range(1, n + 1):
    with open(os.path.join(out, "quotes-%03d.html" % p), "w", encoding="utf-8") as f:
        f.write(quotes_page(p))
    with open(os.path.join(out, "products-%03d.html" % p), "w", encoding="utf-8") as f:
        f.write(products_page(p))
print("wrote %d pages to %s" % (2 * n, out))
