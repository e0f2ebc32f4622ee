/* The model store: two A/B image slots and a power-fail-safe metadata journal in flash.
 *
 * Flash layout (offsets in the port's fedtiny region): [meta sector 0 | meta sector 1 | slot 0 | slot 1].
 * Metadata records (magic "FTMD", counter, slot states, CRC-32) are appended to one sector; when it is
 * full the other sector is erased and the journal continues there. Boot takes the valid record with the
 * highest counter, so a torn record write or a torn erase always leaves the previous state in force. */
#ifndef FT_STORE_H
#define FT_STORE_H
#include <stddef.h>
#include <stdint.h>
#include "fedtiny_config.h"
#include "ft_status.h"

#define FT_N_SLOTS 2u
#define FT_NO_SLOT 0xFFu

enum { FT_SLOT_EMPTY = 0, FT_SLOT_RECEIVING = 1, FT_SLOT_VERIFIED = 2, FT_SLOT_TESTING = 3, FT_SLOT_CONFIRMED = 4 };
enum { FT_KIND_HEAD_PATCH = 1, FT_KIND_TFLITE = 2 };

#define FT_SLOT_FLAG_SIGNED 0x01u /* ft_slot_meta.flags: an Ed25519-signed MCUboot image (UploadBegin flag SIGNED) */

typedef struct {
    uint8_t state, kind;
    uint8_t flags;              /* FT_SLOT_FLAG_* */
    uint32_t total_len, received;
    uint8_t sha256[32];
    uint8_t tag[32];
    uint32_t security_counter;  /* anti-rollback counter signed with the image */
} ft_slot_meta;

typedef struct {
    uint32_t counter;
    uint8_t confirmed, testing;
    uint8_t reverted;           /* SlotStatus flags: bit 0 REVERTED, bit 1 FELL_BACK (reported once by STATUS) */
    uint32_t uid_reserved;      /* update ids up to this one may have been issued (reserved before use) */
    uint32_t sec_floor;         /* anti-rollback floor: the highest security counter ever confirmed */
    ft_slot_meta slots[FT_N_SLOTS];
} ft_meta;

typedef struct {
    ft_meta m;
    int have_record;     /* 0: blank flash (never provisioned) */
    uint32_t next_rec;   /* flash offset where the next record goes; 0xFFFFFFFF: switch sectors */
    uint32_t cur_sector; /* sector holding the newest record */
} ft_store;

/* Encoded record size (multiple of the write alignment). */
#define FT_META_REC_SIZE 184u
#define FT_SLOT_BASE(slot) (FT_META_PAGES * FT_FLASH_PAGE_SIZE + (uint32_t)(slot) * FT_SLOT_SIZE)

ft_status ft_store_open(ft_store *st);
/* Append the current metadata (counter + 1) to the journal. */
ft_status ft_store_persist(ft_store *st);
/* Erase the pages of a slot that hold its first len bytes. */
ft_status ft_store_erase(ft_store *st, uint8_t slot, uint32_t len);
/* Program len bytes at offset of a slot (any alignment: boundary words are merged read-modify-write). */
ft_status ft_store_write(ft_store *st, uint8_t slot, uint32_t offset, const uint8_t *data, size_t len);
ft_status ft_store_read(const ft_store *st, uint8_t slot, uint32_t offset, uint8_t *buf, size_t len);
ft_status ft_store_crc32(const ft_store *st, uint8_t slot, uint32_t len, uint32_t *crc);
ft_status ft_store_sha256(const ft_store *st, uint8_t slot, uint32_t len, uint8_t out[32]);
/* *blank = 1 if the slot's first len bytes all read 0xFF (erased), else 0. */
ft_status ft_store_blank(const ft_store *st, uint8_t slot, uint32_t len, int *blank);

#endif
