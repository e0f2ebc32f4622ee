/* docs/protocol.md v1: message types, status codes, capabilities. */
#ifndef FT_PROTO_H
#define FT_PROTO_H

#define FT_PROTO_VERSION 1u
#define FT_FLAG_RESPONSE 0x01u
#define FT_FLAG_RETRY 0x02u
#define FT_HDR_SIZE 8u
#define FT_CRC_SIZE 4u

enum {
    FT_MSG_HELLO = 0x01, FT_MSG_STATUS = 0x02, FT_MSG_RESET = 0x03,
    FT_MSG_GET_HEAD = 0x10, FT_MSG_SET_HEAD = 0x11, FT_MSG_PUSH_SAMPLES = 0x12, FT_MSG_TRAIN = 0x13,
    FT_MSG_READ_UPDATE = 0x14, FT_MSG_UPDATE_ACK = 0x15, FT_MSG_EVALUATE = 0x16,
    FT_MSG_UPLOAD_BEGIN = 0x20, FT_MSG_UPLOAD_CHUNK = 0x21, FT_MSG_UPLOAD_STATUS = 0x22, FT_MSG_VERIFY = 0x23,
    FT_MSG_ACTIVATE = 0x24, FT_MSG_CONFIRM = 0x25, FT_MSG_ROLLBACK = 0x26
};

enum {
    FT_ST_OK = 0, FT_ST_UNKNOWN_TYPE = 1, FT_ST_BAD_VERSION = 2, FT_ST_MALFORMED = 3, FT_ST_BAD_STATE = 4,
    FT_ST_BAD_OFFSET = 5, FT_ST_HASH_MISMATCH = 6, FT_ST_AUTH_FAILED = 7, FT_ST_NO_SPACE = 8, FT_ST_NO_UPDATE = 9,
    FT_ST_UPDATE_PENDING = 10, FT_ST_SELFTEST_FAILED = 11, FT_ST_SHAPE_MISMATCH = 12, FT_ST_FLASH_ERROR = 13,
    FT_ST_BUSY = 14, FT_ST_UNSUPPORTED = 15, FT_ST_CACHE_EMPTY = 16, FT_ST_DOWNGRADE = 17,
    FT_ST_INTERNAL = 255
};

enum {
    FT_CAP_TRAIN = 1u << 0, FT_CAP_EVALUATE = 1u << 1, FT_CAP_RAW_SAMPLES = 1u << 2, FT_CAP_HEAD_PATCH = 1u << 3,
    FT_CAP_FULL_IMAGE = 1u << 4, FT_CAP_FLEET_KEY = 1u << 5, FT_CAP_SET_HEAD = 1u << 6,
    FT_CAP_FLOAT_TRAIN = 1u << 7, FT_CAP_FIXED_TRAIN = 1u << 8
};

#define FT_SS_REVERTED 0x01u  /* SlotStatus flags: the last boot reverted an unconfirmed test image */
#define FT_SS_FELL_BACK 0x02u /* SlotStatus flags: the last boot found the confirmed image corrupt, ran the other slot */
#define FT_UPLOAD_BEGIN_SIZE 76u
/* TrainRequest ranges (docs/protocol.md): outside them TRAIN answers MALFORMED */
#define FT_TRAIN_MAX_LR 100.0f
#define FT_TRAIN_MAX_DECAY 100.0f /* weight_decay and prox_mu */

#define FT_TRAIN_FIXED 0x01u /* TrainRequest flags bit 0: fixed-point SGD (docs/ondevice.md 3b) */

#endif
