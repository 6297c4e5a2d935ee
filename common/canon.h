/* canon.h — canonical JSON text: two values that say the same thing (up to key order,
 * whitespace, number spelling, escapes) get the same bytes. cache_key.h hashes it. */
#ifndef AIQ_CANON_H
#define AIQ_CANON_H

#include "aiq_err.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define AIQ_CANON_MAX       (16u << 20) /* cap on one canonical text, bytes */
#define AIQ_CANON_DEPTH_MAX 1024        /* deeper nesting is refused (AIQ_ETOOBIG) */
#define AIQ_CANON_DROP_MAX  64          /* volatile-field paths per call at most */

/* Writes the canonical text of v. Rules (they define cache identity; changing one changes
 * every key, so bump the key version in cache_key.c with it):
 *  - objects: members sorted by key bytes (= code point order, keys are UTF-8); no
 *    insignificant whitespace anywhere;
 *  - strings: the decoded UTF-8 bytes, so "\u00e9" and "é" are one string; only '"', '\\'
 *    and bytes < 0x20 are escaped. No Unicode normalisation: "é" and "e\u0301" differ;
 *  - numbers are equal when mathematically equal as parsed: a JSON integer literal is
 *    exact in the int64 range (larger literals are refused by jansson's parser); a literal
 *    with fraction or exponent is an IEEE double, and a double with an integral value in
 *    [-2^63, 2^63) is written as that integer, so 1, 1.0, 1e0, 10e-1 and 0.1e1 are all "1"
 *    and -0, -0.0 and 0e5 are all "0". Other doubles are written as the shortest digits
 *    that round-trip, "<digits>e<exp>" (0.1 → "1e-1"). Beyond 2^53 a double is only as
 *    exact as its 53-bit mantissa, so 9007199254740993.0 equals 9007199254740992 but not
 *    the integer literal 9007199254740993; NaN and infinities are refused (AIQ_EINVAL);
 *  - true, false and null as themselves.
 * drop lists volatile fields (ndrop <= AIQ_CANON_DROP_MAX): a name without '.' drops that
 * member of the top-level object only; "meta.request_id" drops member request_id of the
 * object at top-level member meta (any depth of dots). Paths never descend into arrays,
 * and a member whose name contains '.' cannot be named. drop may be NULL when ndrop is 0.
 * Borrows v and drop. On success *out is a NUL-terminated malloc'd string (caller frees)
 * and *len its length. Errors: AIQ_EINVAL (NaN/inf, bad arguments), AIQ_ETOOBIG (text over
 * AIQ_CANON_MAX or nesting over AIQ_CANON_DEPTH_MAX), AIQ_ENOMEM. Any thread. */
int aiq_canon_json(const json_t *v, const char *const *drop, size_t ndrop, char **out, size_t *len,
                   aiq_err_t *err);

#endif
