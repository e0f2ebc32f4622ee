/* Every unit test, in run order. Add a test: write `void test_NAME(void)` in a test_*.c and list it here. */
#ifndef FT_TESTS_LIST_H
#define FT_TESTS_LIST_H

#define FT_TESTS(X)        \
    X(sha256_vectors)      \
    X(sha256_streaming)    \
    X(hmac_vectors)        \
    X(crc32_vectors)       \
    X(cobs_vectors)        \
    X(cobs_roundtrip)      \
    X(cobs_malformed)      \
    X(simflash_nor)        \
    X(quantize_multiplier) \
    X(head_forward_golden) \
    X(head_patch_roundtrip) \
    X(requantize_golden)   \
    X(sample_order_golden) \
    X(fmath_golden)        \
    X(train_golden)        \
    X(train_fixed_golden)  \
    X(cache_ring)          \
    X(labels_golden)       \
    X(cache_sample_ids)    \
    X(frame_vectors)       \
    X(link_framing)        \
    X(device_commands)     \
    X(upload_resume_and_auth) \
    X(power_cut_first_update) \
    X(power_cut_second_update) \
    X(power_cut_after_op)  \
    X(train_ranges_and_work_bound) \
    X(update_ids_never_repeat) \
    X(confirm_tests_image_under_test) \
    X(boot_rehash_and_fallback) \
    X(downgrade_refused)   \
    X(head_input_quantization_checked) \
    X(protocol_decisions)  \
    X(image_signed_golden) \
    X(image_tampered)      \
    X(keys_provision_and_keyset) \
    X(keys_change_statuses) \
    X(keys_power_cut_every_write) \
    X(security_counter_power_cut) \
    X(signed_upload_on_device) \
    X(label_message)       \
    X(train_pseudo_checks) \
    X(infer_message)       \
    X(stage_input)

#define FT_DECL(name) void test_##name(void);
FT_TESTS(FT_DECL)
#undef FT_DECL


int ft_test_run_all(void);
#endif
