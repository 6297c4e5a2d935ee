/* aiq_err.h — the one error convention of aiq.
 * 0 is success, a negative AIQ_E* code is failure; an aiq_err_t carries the cause. */
#ifndef AIQ_ERR_H
#define AIQ_ERR_H

#include <stddef.h>

enum {
    AIQ_OK = 0,
    AIQ_EINVAL = -1,    /* bad input or bad configuration */
    AIQ_ENOMEM = -2,    /* allocation failed */
    AIQ_EIO = -3,       /* file or socket error */
    AIQ_ETOOBIG = -4,   /* a size cap was hit */
    AIQ_EKAFKA = -5,    /* librdkafka reported an error */
    AIQ_EHTTP = -6,     /* libcurl or HTTP-level error */
    AIQ_ETIMEDOUT = -7, /* a deadline passed */
    AIQ_ENOTFOUND = -8, /* the thing asked for does not exist */
    AIQ_ESTATE = -9,    /* call not legal in the current state */
    AIQ_ECRYPTO = -10,  /* libcrypto failed */
    AIQ_EFULL = -11,    /* a local queue is full: serve callbacks, then retry */
};

/* Human-readable cause of the last failure; filled by the callee, owned by the caller. */
typedef struct aiq_err {
    int code;
    char msg[512];
} aiq_err_t;

/* Records code and a printf-style message in err (err may be NULL); returns code so
 * that callers can write `return aiq_err_set(err, AIQ_EINVAL, "...")`. */
int aiq_err_set(aiq_err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Short stable name of a code ("EINVAL"), for logs and DLQ headers. */
const char *aiq_err_name(int code);

#endif
