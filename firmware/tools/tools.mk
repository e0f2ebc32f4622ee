# Host and QEMU tools for benchmarks/model_table.py and `fedtiny info` (included at the end of firmware/Makefile:
# uses its TFL_SRC, TFL_HDRS, MPS2_SRC, ARM_CFLAGS/ARM_LDFLAGS, QEMU_RUN, HAVE_ARM).
#   make tools    build/tools/ft_plan (host: the firmware's plan and arena for a .tflite), build/tools/ft_plan_dsp
#                 (the same with the DSP kernels, FT_TFL_OPTIMIZED=1: the arena of a Cortex-M4/M7/M33 build, which
#                 `fedtiny info MODEL --board NAME` reads) and, with the ARM compiler, build/tools/bench_model.elf
#                 (instructions per inference in QEMU mps2-an386 -icount)
.PHONY: tools
TOOLS_PLAN := $(B)/tools/ft_plan
TOOLS_PLAN_DSP := $(B)/tools/ft_plan_dsp
TOOLS_BENCH := $(B)/tools/bench_model.elf

$(TOOLS_PLAN): $(TFL_SRC) tools/ft_plan.c $(TFL_HDRS) tools/tools.mk Makefile
	@mkdir -p $(@D)
	$(CC) $(WARN) -O2 -Icore $(FT_DEFS) -o $@ $(TFL_SRC) tools/ft_plan.c -lm

$(TOOLS_PLAN_DSP): $(TFL_SRC) tools/ft_plan.c $(TFL_HDRS) tools/tools.mk Makefile
	@mkdir -p $(@D)
	$(CC) $(WARN) -O2 -Icore -DFT_TFL_OPTIMIZED=1 $(FT_DEFS) -o $@ $(TFL_SRC) tools/ft_plan.c -lm

$(TOOLS_BENCH): $(TFL_SRC) tools/bench_model.c $(TFL_HDRS) $(MPS2_SRC) ports/mps2-an386/mps2.ld tools/tools.mk Makefile
	@mkdir -p $(@D) $(B)/mps2
	$(ARM_CC) $(ARM_CFLAGS) $(ARM_LDFLAGS) -o $@ $(TFL_SRC) tools/bench_model.c $(MPS2_SRC) ports/common/ft_simflash.c -lm

ifeq ($(HAVE_ARM),1)
tools: $(TOOLS_PLAN) $(TOOLS_PLAN_DSP) $(TOOLS_BENCH)
else
tools: $(TOOLS_PLAN) $(TOOLS_PLAN_DSP)
	@echo "SKIP: $(ARM_CC) not found: build/tools/bench_model.elf (instruction counts) needs gcc-arm-none-eabi"
endif
