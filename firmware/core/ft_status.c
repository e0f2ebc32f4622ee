#include "ft_status.h"

const char *ft_status_str(ft_status s)
{
    switch (s) {
    case FT_OK: return "ok";
    case FT_ERR_ARG: return "bad argument";
    case FT_ERR_RANGE: return "out of range";
    case FT_ERR_FORMAT: return "malformed";
    case FT_ERR_CRC: return "crc mismatch";
    case FT_ERR_AUTH: return "authentication failed";
    case FT_ERR_STATE: return "bad state";
    case FT_ERR_FLASH: return "flash error";
    case FT_ERR_IO: return "i/o error";
    case FT_ERR_NOSPACE: return "no space";
    case FT_ERR_EMPTY: return "empty";
    case FT_ERR_AGAIN: return "again";
    case FT_ERR_UNSUPPORTED: return "unsupported";
    }
    return "unknown";
}
