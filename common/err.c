#include "aiq_err.h"

#include <stdarg.h>
#include <stdio.h>

int aiq_err_set(aiq_err_t *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return code;
}

const char *aiq_err_name(int code)
{
    switch (code) {
    case AIQ_OK:
        return "OK";
    case AIQ_EINVAL:
        return "EINVAL";
    case AIQ_ENOMEM:
        return "ENOMEM";
    case AIQ_EIO:
        return "EIO";
    case AIQ_ETOOBIG:
        return "ETOOBIG";
    case AIQ_EKAFKA:
        return "EKAFKA";
    case AIQ_EHTTP:
        return "EHTTP";
    case AIQ_ETIMEDOUT:
        return "ETIMEDOUT";
    case AIQ_ENOTFOUND:
        return "ENOTFOUND";
    case AIQ_ESTATE:
        return "ESTATE";
    case AIQ_ECRYPTO:
        return "ECRYPTO";
    case AIQ_EFULL:
        return "EFULL";
    default:
        return "EUNKNOWN";
    }
}
