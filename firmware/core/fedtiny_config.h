/* fedtiny firmware: every compile-time option, in one place.
 * Each can be overridden with -DNAME=value (the ports' build files do so where a board differs). */
#ifndef FEDTINY_CONFIG_H
#define FEDTINY_CONFIG_H

/* ---- head / training ---------------------------------------------------------------------- */
#ifndef FT_MAX_CLASSES          /* max C: outputs of the head (FULLY_CONNECTED) */
#define FT_MAX_CLASSES 16
#endif
#ifndef FT_MAX_DIM              /* max D: feature length (inputs of the head) */
#define FT_MAX_DIM 128
#endif
#ifndef FT_CACHE_CAPACITY       /* int8 feature cache: samples held (ring buffer) */
#define FT_CACHE_CAPACITY 200
#endif
#ifndef FT_MAX_EPOCHS           /* TRAIN requests with more epochs are refused (MALFORMED): bounds the run time */
#define FT_MAX_EPOCHS 1000u
#endif
#ifndef FT_MAX_TRAIN_WORK       /* TRAIN with epochs x cached samples above this is refused (MALFORMED): the work bound */
#define FT_MAX_TRAIN_WORK 65536u
#endif
#ifndef FT_UPDATE_ID_BLOCK      /* update ids reserved in flash per metadata write (ids never repeat across resets) */
#define FT_UPDATE_ID_BLOCK 4096u
#endif
#ifndef FT_USE_FLOAT            /* 1: float32 SGD head training (+ the fixed-point path on TRAIN flag FIXED); 0: only the fixed-point path of
                                 * docs/ondevice.md 3b for boards without an FPU (plain SGD only) */
#define FT_USE_FLOAT 1
#endif

/* ---- model store (flash) ------------------------------------------------------------------ */
#ifndef FT_FLASH_PAGE_SIZE      /* erase unit of the flash, bytes */
#define FT_FLASH_PAGE_SIZE 4096u
#endif
#ifndef FT_FLASH_WRITE_ALIGN    /* program unit of the flash, bytes (power of two, <= 16) */
#define FT_FLASH_WRITE_ALIGN 4u
#endif
#ifndef FT_SLOT_SIZE            /* bytes of one image slot (A and B each); multiple of the page size. A full .tflite image
                                 * (UPLOAD kind 2) must fit: 256 KB as the virtual board (fedtiny's reference models are
                                 * 25-47 KB); a real board sets it from its flash (2 slots + 8 KB of metadata) */
#define FT_SLOT_SIZE (256u * 1024u)
#endif
#ifndef FT_META_PAGES           /* pages of the metadata journal (two banks, alternating) */
#define FT_META_PAGES 2u
#endif
#ifndef FT_KEY_PAGES            /* pages of the trusted-key journal after the slots (two banks, alternating: ft_keys.h) */
#define FT_KEY_PAGES 2u
#endif
#define FT_FLASH_SIZE (FT_META_PAGES * FT_FLASH_PAGE_SIZE + 2u * FT_SLOT_SIZE + FT_KEY_PAGES * FT_FLASH_PAGE_SIZE)


/* ---- link --------------------------------------------------------------------------------- */
#ifndef FT_MAX_PAYLOAD          /* max bytes of one message payload (before framing): 4096 (the protocol's maximum) carries
                                 * one raw int8 sample of up to 4,088 inputs or float32 of up to 1,021 per PUSH_SAMPLES */
#define FT_MAX_PAYLOAD 4096u
#endif
#ifndef FT_MAX_STAGED_INPUT     /* bytes of the STAGE_INPUT buffer (docs/protocol.md "STAGE_INPUT"): one raw input larger than a
                                 * frame, staged in pieces, then used by PUSH_SAMPLES / INFER kinds 3 (int8: raw_input_len
                                 * bytes) and 4 (float32: 4 x raw_input_len). A static array in ft_dev, no malloc: RAM cost
                                 * = this + 8 bytes. Range 0 (off: no STAGED_INPUT capability, STAGE_INPUT and kinds 3, 4
                                 * answer UNSUPPORTED) .. 16,777,216. Default 32,768 on hosted builds (the host port, the
                                 * tests), 0 on microcontroller ports: a board sets it to its largest model's input
                                 * (visual wake words 96x96x3 int8: 27,648) */
#if defined(__linux__) || defined(__APPLE__)
#define FT_MAX_STAGED_INPUT 32768u
#else
#define FT_MAX_STAGED_INPUT 0u
#endif
#endif
#if FT_MAX_STAGED_INPUT > 16777216u
#error "FT_MAX_STAGED_INPUT: at most 16,777,216 bytes"
#endif
#ifndef FT_RX_WINDOW            /* UPLOAD_CHUNK frames the link can buffer (advertised in HELLO) */
#define FT_RX_WINDOW 4u
#endif
#ifndef FT_HMAC_KEY_LEN         /* bytes of the per-fleet image/update authentication key */
#define FT_HMAC_KEY_LEN 32u
#endif
#ifndef FT_FLEET_KEY_INIT       /* compiled-in fleet key: the protocol test-vector key bytes(range(32)).
                                 * FOR TESTS ONLY: real boards get theirs at provisioning (-DFT_FLEET_KEY_INIT=...) */
#define FT_FLEET_KEY_INIT {0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31}
#endif
#ifndef FT_HAS_FLEET_KEY        /* 0: no key provisioned (every upload is refused with AUTH_FAILED) */
#define FT_HAS_FLEET_KEY 1
#endif
#ifndef FT_DEVICE_ID            /* default device id (ports may read a per-board id instead) */
#define FT_DEVICE_ID 1u
#endif
#ifndef FT_FW_VERSION
#define FT_FW_VERSION "fedtiny-fw 0.1"
#endif

/* ---- int8 TFLite interpreter (ft_tfl_*: issue 11) ---------------------------------------- */
#ifndef FT_TFL_MAX_TENSORS      /* tensors of a model (weights, biases and activations): more is refused at verify */
#define FT_TFL_MAX_TENSORS 128
#endif
#ifndef FT_TFL_MAX_OPS          /* operators of a model */
#define FT_TFL_MAX_OPS 64
#endif
#ifndef FT_TFL_MAX_IO           /* graph inputs / outputs */
#define FT_TFL_MAX_IO 4
#endif
#ifndef FT_TFL_ARENA_SIZE       /* bytes of the static activation arena a port gives the interpreter */
#define FT_TFL_ARENA_SIZE (96u * 1024u)
#endif
#ifndef FT_TFL_MAX_MACS         /* multiply-accumulates per inference: a model above it is refused (bounds run time) */
#define FT_TFL_MAX_MACS 64000000u
#endif
#ifndef FT_TFL_REASON_LEN       /* bytes of the refusal reason kept by verify */
#define FT_TFL_REASON_LEN 96
#endif
#ifndef FT_BACKBONE             /* 1: ft_dev runs full .tflite images with the interpreter (UPLOAD kind 2, raw samples,
                                 * FULL_IMAGE + RAW_SAMPLES); 0: head patches only (no model struct, no arena in RAM) */
#define FT_BACKBONE 1
#endif
#ifndef FT_TFL_OPTIMIZED        /* 1: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED and the pools run the SIMD kernels of
                                 * ft_tfl_ops_dsp.c (bit-exact with the portable ones; CONV_2D's scratch is planned in the
                                 * arena's gaps at verify, never past TFLite Micro's arena: else that layer runs the portable
                                 * kernel). Default on where the compiler targets the DSP extension (Cortex-M4/M7/M33);
                                 * elsewhere 1 runs the same kernels with C stand-ins for the instructions (tests only) */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define FT_TFL_OPTIMIZED 1
#else
#define FT_TFL_OPTIMIZED 0
#endif
#endif
/* ---- end of the int8 TFLite interpreter options ------------------------------------------- */

#endif /* FEDTINY_CONFIG_H */
