/* fedtiny port for ESP32-S3 (ESP-IDF): USB-Serial-JTAG / UART0 link, the "fedtiny" data partition as flash.
 * NOT BUILT IN CI. (BLE NUS on NimBLE would feed the same ft_port_read/ft_port_write; not written yet.) */
#include "port.h"
#include "fedtiny_config.h"
#include "ft_app.h"
#include "driver/uart.h"
#include "esp_partition.h"
#include "esp_system.h"
#include "esp_timer.h"
#include "esp_mac.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include <string.h>

static const esp_partition_t *part;

ft_status ft_port_read(uint8_t *buf, size_t cap, size_t *got)
{
    int n = uart_read_bytes(UART_NUM_0, buf, cap, pdMS_TO_TICKS(10));
    *got = n > 0 ? (size_t)n : 0;
    return n < 0 ? FT_ERR_IO : FT_OK;
}

ft_status ft_port_write(const uint8_t *buf, size_t len)
{
    return uart_write_bytes(UART_NUM_0, buf, len) == (int)len ? FT_OK : FT_ERR_IO;
}

ft_status ft_port_flash_read(uint32_t off, void *buf, size_t len)
{
    return esp_partition_read(part, off, buf, len) == ESP_OK ? FT_OK : FT_ERR_FLASH;
}

ft_status ft_port_flash_write(uint32_t off, const void *buf, size_t len)
{
    return esp_partition_write(part, off, buf, len) == ESP_OK ? FT_OK : FT_ERR_FLASH; /* NOR: clears bits */
}

ft_status ft_port_flash_erase(uint32_t off, size_t len)
{
    return esp_partition_erase_range(part, off, len) == ESP_OK ? FT_OK : FT_ERR_FLASH;
}

/* The whole partition mapped once into the data address space (esp_partition_mmap, 64 KB MMU pages; NOT BUILT IN
 * CI). NULL when the mapping fails: full .tflite images are then refused. */
const uint8_t *ft_port_flash_map(uint32_t off, size_t len)
{
    static const void *base;
    static esp_partition_mmap_handle_t h;
    if (off > FT_FLASH_SIZE || len > FT_FLASH_SIZE - off) return NULL;
    if (!base && esp_partition_mmap(part, 0, FT_FLASH_SIZE, ESP_PARTITION_MMAP_DATA, &base, &h) != ESP_OK) return NULL;
    return base ? (const uint8_t *)base + off : NULL;
}

uint32_t ft_port_millis(void) { return (uint32_t)(esp_timer_get_time() / 1000); }
void ft_port_log(const char *msg) { (void)msg; }
const char *ft_port_board_name(void) { return "esp32s3"; }

uint32_t ft_port_device_id(void)
{
    uint8_t mac[6];
    esp_read_mac(mac, ESP_MAC_WIFI_STA);
    return ((uint32_t)mac[2] << 24) | ((uint32_t)mac[3] << 16) | ((uint32_t)mac[4] << 8) | mac[5];
}

void ft_port_reset(void) { esp_restart(); }

void app_main(void)
{
    uart_driver_install(UART_NUM_0, 4096, 4096, 0, NULL, 0);
    part = esp_partition_find_first(ESP_PARTITION_TYPE_DATA, 0x40, "fedtiny");
    if (!part || part->size < FT_FLASH_SIZE || ft_app_boot(NULL) != FT_OK) {
        for (;;) vTaskDelay(pdMS_TO_TICKS(1000));
    }
    for (;;) {
        if (ft_app_poll() == FT_ERR_AGAIN) ft_port_reset();
    }
}
