/* Private to the CSS compiler (css.c, css_lex.c): tokens, the parser
 * state and cssselect's XPathExpr (path, element, condition) builders. */
#ifndef SHARED_CSS_INT_H
#define SHARED_CSS_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "shared/err.h"

enum tok_type { T_EOF, T_S, T_IDENT, T_HASH, T_STRING, T_NUMBER, T_DELIM };

struct tok {
    enum tok_type type;
    char *value; /* unescaped; for T_DELIM the character */
    size_t pos;
};

struct toks {
    struct tok *v;
    size_t n, cap;
};

/* cssselect's XPathExpr: str() = path + element + [condition]. */
struct xexpr {
    char *path;
    char *element;
    char *cond; /* "" = none */
};

struct parser {
    const char *css;
    struct toks t;
    size_t i;
    bool failed;
    size_t err_pos;
    struct sh_err *err;
    bool fast; /* sh_css_to_xpath_fast: "/descendant::" for descendant combinators */
};

/* Records the first error (message "<what> at position N in '<css>'"). */
void css_fail(struct parser *p, size_t pos, const char *what);
/* Splits p->css into p->t (ending with T_EOF); -1 after css_fail. */
int css_tokenize(struct parser *p);

/* XPathExpr operations, named after cssselect's. */
void css_x_init(struct xexpr *x, const char *element);
void css_x_done(struct xexpr *x);
char *css_x_str(const struct xexpr *x); /* new string */
void css_x_cond(struct xexpr *x, const char *cond, const char *conj);
void css_x_condf_take(struct xexpr *x, char *cond); /* "and", frees cond */
char *css_literal(const char *s);                   /* XPath string literal, new */
void css_x_name_test(struct xexpr *x);
void css_x_join(struct xexpr *left, const char *combiner, struct xexpr *right); /* eats right */
bool css_is_safe_name(const char *s);
void css_ascii_lower(char *s);

#endif
