# B-L475E-IOT01A (STM32L475VG, Cortex-M4F) port, included by firmware/Makefile (uses its WARN, INC, ARM_ARCH,
# CORE_SRC, APP_SRC, TEST_SRC, HDRS, ED_DEFS/MC when present, HAVE_ARM).
#   make l475          build/l475/fw.elf (the image for the board: STM32L4 flash driver, store in bank 2),
#                      build/l475/fw-qemu.elf (same, store in SRAM2: QEMU emulates no flash controller),
#                      build/l475/unit_tests.elf
#   make test-l475     the C unit tests on QEMU's b-l475e-iot01a machine (QEMU >= 9; Debian: bookworm-backports)
L475_DIR := ports/b-l475e-iot01a
L475_SRC := $(L475_DIR)/startup_l475.c $(L475_DIR)/port_l475.c $(L475_DIR)/flash_l475.c
L475_LD := $(L475_DIR)/l475.ld
L475_LDS := $(L475_LD) $(L475_DIR)/l475_qemu.ld $(L475_DIR)/l475_tests.ld $(L475_DIR)/l475_sections.ld
# The board: 2 KB pages, 64-bit ECC program unit, bank 2 = 2 metadata pages, 2 key-journal pages and 2 slots of 252 KB; RAM (96 KB
# SRAM1 + 32 KB SRAM2) bounds the rest: head up to 16 x 128, 100 cached samples, a 24 KB arena, 1 KB payloads.
L475_FW_DEFS := -DFT_FLASH_PAGE_SIZE=2048u -DFT_FLASH_WRITE_ALIGN=8u -DFT_SLOT_SIZE=258048u \
                -DFT_CACHE_CAPACITY=100 -DFT_TFL_ARENA_SIZE=24576u -DFT_MAX_PAYLOAD=1024u
# QEMU: the store in SRAM2 (28 KB: slots of 10 KB hold head patches and small full images), so the arena
# (11.5 KB: the small full images that fit a 10 KB slot need less; the training-set list of partial labels and
# INFER took the rest of SRAM1) moves to SRAM1
L475_QEMU_DEFS := -DFT_FLASH_PAGE_SIZE=2048u -DFT_SLOT_SIZE=10240u -DFT_CACHE_CAPACITY=100 \
                  -DFT_TFL_ARENA_SIZE=11776u -DFT_TFL_MAX_TENSORS=64 -DFT_MAX_PAYLOAD=1024u -DFT_L475_RAMFLASH -DFT_SIMFLASH_NOINIT
# unit tests: the 10 x 64 configuration with 100 cached samples (the work bound halved with it: the tests check
# epochs x cached samples against it); the runner's tests use no interpreter, so its tables are small. The tests'
# own buffers fill SRAM1: l475_tests.ld puts arena, stack and RAM flash in SRAM2.
L475_TEST_DEFS := -DFT_MAX_CLASSES=10 -DFT_MAX_DIM=64 -DFT_MAX_PAYLOAD=512 -DFT_FLASH_PAGE_SIZE=2048u \
                  -DFT_SLOT_SIZE=4096u -DFT_TFL_ARENA_SIZE=4096u -DFT_TFL_MAX_TENSORS=32 -DFT_TFL_MAX_OPS=16 \
                  -DFT_CACHE_CAPACITY=100 -DFT_MAX_TRAIN_WORK=32768u -DFT_L475_RAMFLASH -DFT_SIMFLASH_NOINIT
L475_CFLAGS = $(WARN) -Os -g $(ARM_ARCH) -ffunction-sections -fdata-sections -fno-common $(INC) -I$(L475_DIR) \
              $(ED_DEFS)
L475_LDFLAGS = $(ARM_ARCH) -L $(L475_DIR) -nostartfiles -Wl,--gc-sections --specs=nano.specs --specs=nosys.specs \
               -Wl,-Map,$@.map
L475_QEMU := $(QEMU) -M b-l475e-iot01a -nographic -semihosting-config enable=on,target=native -monitor none
# The machine exists from QEMU 9 on (Debian 12's QEMU 7.2 lacks it)
HAVE_L475 := $(shell $(QEMU) -M help 2>/dev/null | grep -q '^b-l475e-iot01a ' && echo 1)
L475_DEPS := $(CORE_SRC) $(L475_SRC) $(HDRS) $(L475_LDS) $(L475_DIR)/l475.mk Makefile
ifneq ($(ED_DEFS),)
L475_MC := $(B)/l475/monocypher.o
$(L475_MC): $(MC)/monocypher.c
	@mkdir -p $(@D)
	$(ARM_CC) -std=c99 -Os -g $(ARM_ARCH) -ffunction-sections -fdata-sections -c -o $@ $<
endif

.PHONY: l475 test-l475 size-l475
ifeq ($(HAVE_ARM),1)
l475: $(B)/l475/fw.elf $(B)/l475/fw-qemu.elf $(B)/l475/unit_tests.elf

$(B)/l475/fw.elf: $(L475_DEPS) $(APP_SRC) $(L475_DIR)/main_l475.c $(L475_MC)
	@mkdir -p $(@D)
	$(ARM_CC) $(L475_CFLAGS) $(L475_FW_DEFS) $(FT_DEFS) $(L475_LDFLAGS) -T $(L475_LD) -o $@ $(CORE_SRC) $(APP_SRC) \
	    $(L475_DIR)/main_l475.c $(L475_SRC) $(L475_MC) -lm

$(B)/l475/fw-qemu.elf: $(L475_DEPS) $(APP_SRC) $(L475_DIR)/main_l475.c $(L475_MC)
	@mkdir -p $(@D)
	$(ARM_CC) $(L475_CFLAGS) $(L475_QEMU_DEFS) $(FT_DEFS) $(L475_LDFLAGS) -T $(L475_DIR)/l475_qemu.ld -o $@ $(CORE_SRC) $(APP_SRC) \
	    $(L475_DIR)/main_l475.c $(L475_SRC) $(L475_MC) -lm

$(B)/l475/unit_tests.elf: $(L475_DEPS) $(TEST_SRC) $(L475_DIR)/tests_main_l475.c $(L475_MC)
	@mkdir -p $(@D)
	$(ARM_CC) $(L475_CFLAGS) $(L475_TEST_DEFS) $(FT_DEFS) $(L475_LDFLAGS) -T $(L475_DIR)/l475_tests.ld -o $@ $(CORE_SRC) $(TEST_SRC) \
	    $(L475_DIR)/tests_main_l475.c $(L475_SRC) $(L475_MC) -lm

size-l475: $(B)/l475/fw.elf
	$(ARM_SIZE) -A $< | grep -E "^(section|\.text|\.data|\.bss|\.noinit|\.stack|Total)"
else
l475 size-l475:
	@echo "SKIP: $(ARM_CC) not found: the B-L475E-IOT01A build needs gcc-arm-none-eabi + libnewlib-arm-none-eabi"
endif

ifeq ($(HAVE_ARM)$(HAVE_L475),11)
test-l475: $(B)/l475/unit_tests.elf
	timeout 300 $(L475_QEMU) -kernel $<
else
test-l475:
	@echo "SKIP: test-l475 needs $(ARM_CC) and a $(QEMU) with machine b-l475e-iot01a (QEMU >= 9; on Debian 12: qemu-system-arm from bookworm-backports, scripts/install-system-deps.sh)"
endif
