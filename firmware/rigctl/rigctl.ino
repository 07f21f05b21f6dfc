/*
 * rigctl: servo and light controller for the photo-capture rig (ATmega328P,
 * Arduino Uno/Nano). The protocol and motion logic live in portable files;
 * this sketch only wires them to the hardware. PROTOCOL.md is the contract.
 */
#include <Arduino.h>
#include <avr/eeprom.h>
#include <avr/wdt.h>
#include "app.h"
#include "config.h"
#include "hw.h"
#include "proto.h"
#include "servo_out.h"

static const uint8_t LIGHT_PINS[RIG_LIGHTS] = {5, 6}; /* Timer0 PWM, OC0B / OC0A */

/*
 * Capture the reset cause before anything clears it, and stop a watchdog that
 * is still armed after a watchdog reset (it would keep resetting us during
 * start-up). Runs from .init3, before C++ constructors and main().
 */
uint8_t mcusr_at_boot __attribute__((section(".noinit")));
extern "C" void grab_mcusr(void) __attribute__((naked, used, section(".init3")));
extern "C" void grab_mcusr(void)
{
    /* Optiboot clears MCUSR before starting us but leaves its copy in r2,
     * which the C start-up code has not touched yet at .init3. */
    uint8_t from_bootloader;
    __asm__ __volatile__("mov %0, r2" : "=r"(from_bootloader));
    uint8_t m = MCUSR;
    mcusr_at_boot = m ? m : from_bootloader;
    MCUSR = 0;
    wdt_disable();
}

static BootCause boot_cause(uint8_t m)
{
    if (m & _BV(WDRF))
        return BOOT_WATCHDOG;
    if (m & (_BV(PORF) | _BV(BORF)))
        return BOOT_POWER;
    /* External reset, or a bootloader that already cleared MCUSR (an Uno resets
     * through its bootloader when the port opens): both mean "someone reset us". */
    return BOOT_RESET;
}

extern "C" {
uint32_t hw_millis(void) { return millis(); }
uint32_t hw_micros(void) { return micros(); }
void hw_write(const char *buf, size_t len) { Serial.write((const uint8_t *)buf, len); }
uint16_t hw_tx_room(void) { return (uint16_t)Serial.availableForWrite(); }
int16_t hw_read(void) { return (int16_t)Serial.read(); }
uint16_t hw_rx_waiting(void) { return (uint16_t)Serial.available(); }
uint8_t hw_rx_full(void) { return Serial.available() >= SERIAL_RX_BUFFER_SIZE - 1; }
void hw_servo_ticks(uint8_t ch, uint16_t ticks) { servo_out_set(ch, ticks); }
void hw_light(uint8_t ch, uint8_t level) { analogWrite(LIGHT_PINS[ch], level); }

void hw_eeprom_read(uint16_t addr, uint8_t *buf, uint16_t len)
{
    eeprom_read_block(buf, (const void *)(uintptr_t)addr, len);
}

void hw_eeprom_update(uint16_t addr, const uint8_t *buf, uint16_t len)
{
    /* Byte by byte with a watchdog kick: a full rewrite takes ~3.4 ms per byte, and the
     * servos keep moving on time while the EEPROM is busy. */
    for (uint16_t i = 0; i < len; i++) {
        wdt_reset();
        while (!eeprom_is_ready())
            app_motion_tick();
        eeprom_update_byte((uint8_t *)(uintptr_t)(addr + i), buf[i]);
    }
}

void hw_reset(void)
{
    Serial.flush(); /* the "ok" must leave before we go */
    servo_out_stop();
    wdt_enable(WDTO_15MS);
    for (;;) {
    }
}
}

void setup()
{
    Serial.begin(115200);
    for (uint8_t ch = 0; ch < RIG_LIGHTS; ch++)
        pinMode(LIGHT_PINS[ch], OUTPUT);
    app_boot(boot_cause(mcusr_at_boot)); /* sets every servo's park pulse ... */
    servo_out_begin();                   /* ... before the first pulse goes out */
    /* A hung main loop (or a stuck UART) restarts the board; the host sees
     * "!boot ... cause=watchdog" and re-applies its state. */
    wdt_enable(WDTO_250MS);
}

void loop()
{
    wdt_reset();
    /* Bounded work per pass, and never a wait for the UART, so motion and the watchdog
     * are served whatever the host sends or fails to read. */
    proto_poll();
    app_poll();
}
