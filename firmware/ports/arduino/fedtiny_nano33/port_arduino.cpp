// fedtiny port for the Nano 33 BLE Sense: Serial / BLE NUS link, nRF52840 NVMC flash pages for the store.
// NOT BUILT IN CI. Flash region: the last FT_FLASH_SIZE bytes below 0xF0000 (keep the linker's app below it).
#include <Arduino.h>
#include <ArduinoBLE.h>
#include <nrf.h>
extern "C" {
#include "port.h"
#include "fedtiny_config.h"
}

extern BLECharacteristic nusRx, nusTx;
extern "C" volatile int ft_arduino_ble_active = 0;
static const uint32_t FLASH_BASE = 0xF0000u - FT_FLASH_SIZE;  // nRF52840: 4 KB pages, 4-byte words

extern "C" ft_status ft_port_read(uint8_t *buf, size_t cap, size_t *got) {
  size_t n = 0;
  if (ft_arduino_ble_active && nusRx.written()) {
    n = nusRx.valueLength() < (int)cap ? nusRx.valueLength() : cap;
    memcpy(buf, nusRx.value(), n);
  } else {
    while (n < cap && Serial.available() > 0) buf[n++] = (uint8_t)Serial.read();
  }
  *got = n;
  return FT_OK;
}

extern "C" ft_status ft_port_write(const uint8_t *buf, size_t len) {
  if (ft_arduino_ble_active) {  // chunks of ATT_MTU - 3 (notifications longer than that are cut silently)
    size_t mtu = 244;
    for (size_t off = 0; off < len; off += mtu) {
      size_t n = len - off < mtu ? len - off : mtu;
      if (!nusTx.writeValue(buf + off, n)) return FT_ERR_IO;
    }
    return FT_OK;
  }
  return Serial.write(buf, len) == len ? FT_OK : FT_ERR_IO;
}

static void nvmc_wait(void) { while (NRF_NVMC->READY == 0) {} }

extern "C" ft_status ft_port_flash_read(uint32_t off, void *buf, size_t len) {
  if (off + len > FT_FLASH_SIZE) return FT_ERR_ARG;
  memcpy(buf, (const void *)(FLASH_BASE + off), len);
  return FT_OK;
}

extern "C" ft_status ft_port_flash_write(uint32_t off, const void *buf, size_t len) {
  if (off % 4 || len % 4 || off + len > FT_FLASH_SIZE) return FT_ERR_ARG;
  NRF_NVMC->CONFIG = NVMC_CONFIG_WEN_Wen;
  nvmc_wait();
  for (size_t i = 0; i < len; i += 4) {
    uint32_t w;
    memcpy(&w, (const uint8_t *)buf + i, 4);
    *(volatile uint32_t *)(FLASH_BASE + off + i) = w;  // NOR: only clears bits (a word may be written twice)
    nvmc_wait();
  }
  NRF_NVMC->CONFIG = NVMC_CONFIG_WEN_Ren;
  return FT_OK;
}

extern "C" ft_status ft_port_flash_erase(uint32_t off, size_t len) {
  if (off % FT_FLASH_PAGE_SIZE || len % FT_FLASH_PAGE_SIZE || off + len > FT_FLASH_SIZE) return FT_ERR_ARG;
  for (size_t p = 0; p < len; p += FT_FLASH_PAGE_SIZE) {
    NRF_NVMC->CONFIG = NVMC_CONFIG_WEN_Een;
    nvmc_wait();
    NRF_NVMC->ERASEPAGE = FLASH_BASE + off + p;
    nvmc_wait();
    NRF_NVMC->CONFIG = NVMC_CONFIG_WEN_Ren;
  }
  return FT_OK;
}

// NVMC flash is memory-mapped: the interpreter reads a model's weights in place (NOT BUILT IN CI).
extern "C" const uint8_t *ft_port_flash_map(uint32_t off, size_t len) {
  if (off > FT_FLASH_SIZE || len > FT_FLASH_SIZE - off) return NULL;
  return (const uint8_t *)(FLASH_BASE + off);
}

extern "C" uint32_t ft_port_millis(void) { return millis(); }
extern "C" void ft_port_log(const char *msg) { (void)msg; }
extern "C" const char *ft_port_board_name(void) { return "nano33ble"; }
extern "C" uint32_t ft_port_device_id(void) { return NRF_FICR->DEVICEID[0]; }
extern "C" void ft_port_reset(void) { NVIC_SystemReset(); }
