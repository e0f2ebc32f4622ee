/* Status codes: every fedtiny call returns one, and every caller checks it. */
#ifndef FT_STATUS_H
#define FT_STATUS_H

typedef enum {
    FT_OK = 0,
    FT_ERR_ARG = -1,        /* bad argument (NULL, out of range) */
    FT_ERR_RANGE = -2,      /* size exceeds a compile-time limit */
    FT_ERR_FORMAT = -3,     /* malformed input (frame, message, image) */
    FT_ERR_CRC = -4,        /* checksum mismatch */
    FT_ERR_AUTH = -5,       /* HMAC / SHA-256 mismatch */
    FT_ERR_STATE = -6,      /* call not valid in the current state */
    FT_ERR_FLASH = -7,      /* flash read/write/erase failed */
    FT_ERR_IO = -8,         /* link I/O failed */
    FT_ERR_NOSPACE = -9,    /* buffer full */
    FT_ERR_EMPTY = -10,     /* nothing there (no data, no image) */
    FT_ERR_AGAIN = -11,     /* not finished yet (more input needed) */
    FT_ERR_UNSUPPORTED = -12
} ft_status;

const char *ft_status_str(ft_status s);

/* Propagate a non-OK status. */
#define FT_TRY(expr) do { ft_status ft_try_s_ = (expr); if (ft_try_s_ != FT_OK) return ft_try_s_; } while (0)

#endif
