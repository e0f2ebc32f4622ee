// fedtiny firmware for the Arduino Nano 33 BLE Sense (nRF52840, Cortex-M4F, 64 MHz, 256 KB RAM, 1 MB flash).
// NOT BUILT IN CI (no Arduino toolchain here): see firmware/README.md for the build steps.
// The link is USB Serial and, at the same time, the Nordic UART Service over BLE (ArduinoBLE): both feed
// the same byte stream into the core; responses go back on the transport the request came from.
#include <Arduino.h>
#include <ArduinoBLE.h>
extern "C" {
#include "ft_app.h"
#include "port.h"
}

static BLEService nus("6E400001-B5A3-F393-E0A9-E50E24DCCA9E");
BLECharacteristic nusRx("6E400002-B5A3-F393-E0A9-E50E24DCCA9E", BLEWriteWithoutResponse | BLEWrite, 244);
BLECharacteristic nusTx("6E400003-B5A3-F393-E0A9-E50E24DCCA9E", BLENotify, 244);
extern "C" volatile int ft_arduino_ble_active;

void setup() {
  Serial.begin(115200);
  if (BLE.begin()) {
    BLE.setLocalName("fedtiny");
    BLE.setAdvertisedService(nus);
    nus.addCharacteristic(nusRx);
    nus.addCharacteristic(nusTx);
    BLE.addService(nus);
    BLE.advertise();
  }
  if (ft_app_boot(NULL) != FT_OK) {  // compiled-in factory head + fleet key (fedtiny_config.h)
    for (;;) delay(1000);
  }
}

void loop() {
  BLE.poll();
  ft_arduino_ble_active = BLE.connected() && nusTx.subscribed();
  if (ft_app_poll() == FT_ERR_AGAIN) NVIC_SystemReset();
}
