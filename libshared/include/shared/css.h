/* CSS selector → XPath 1.0 compiler with the semantics of Python cssselect's
 * HTMLTranslator (the one lxml.cssselect and parsel use): element and
 * attribute names are lower-cased (libxml2's HTML parser lower-cases the
 * document), attribute values and classes stay case-sensitive, and every
 * selector of a group gets the prefix "descendant-or-self::", so a selector
 * evaluated on a node can match that node itself (as in lxml and scrapy).
 *
 * Supported: type, *, .class, #id, [a] [a=v] [a~=v] [a|=v] [a^=v] [a$=v]
 * [a*=v] [a!=v] (quoted or bare values), descendant, >, +, ~, groups ",",
 * :first-child :last-child :only-child :first-of-type :last-of-type
 * :only-of-type :empty :root, :nth-child() :nth-last-child() :nth-of-type()
 * :nth-last-of-type() (an+b, odd, even), :not(compound), :contains("text").
 * Pure and thread-safe. */
#ifndef SHARED_CSS_H
#define SHARED_CSS_H

#include <stddef.h>

#include "shared/err.h"

/* Compiles a selector group to an XPath expression. Returns a new string
 * (caller free()s), or NULL with err = SH_ECONFIG and a message such as
 * "expected ']' at position 7 in 'a[href'" (positions are 1-based
 * characters); *ret_pos (may be NULL) gets the 0-based byte offset of the
 * error and is untouched on success. */
char *sh_css_to_xpath(const char *css, size_t *ret_pos, struct sh_err *err);

/* The same selector as an equivalent XPath that libxml2 evaluates faster:
 * "A B" becomes "A/descendant::B" instead of cssselect's
 * "A/descendant-or-self::*" + "/B" (equal because the generated step
 * predicates never depend on position()). The extraction engine runs this. */
char *sh_css_to_xpath_fast(const char *css, size_t *ret_pos, struct sh_err *err);

#endif
