/*
 * The few things the portable core needs from the board. rigctl.ino implements
 * them on the ATmega328P; a host build can implement them with stubs, so the
 * protocol core compiles and runs on a PC too.
 */
#ifndef RIG_HW_H
#define RIG_HW_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

uint32_t hw_millis(void);
uint32_t hw_micros(void);
/* Queue bytes for the host. Never waits: callers first check that hw_tx_room() can take them. */
void hw_write(const char *buf, size_t len);
/* Bytes the transmit buffer can take now. */
uint16_t hw_tx_room(void);
/* The next received byte, or -1 when none is waiting. */
int16_t hw_read(void);
/* Received bytes waiting to be read. */
uint16_t hw_rx_waiting(void);
/* Nonzero when the receive buffer is full, so bytes arriving now are lost. */
uint8_t hw_rx_full(void);
/* Servo pulse in 0.5 us ticks; the caller has already clamped it to the limits. */
void hw_servo_ticks(uint8_t ch, uint16_t ticks);
void hw_light(uint8_t ch, uint8_t level);
void hw_eeprom_read(uint16_t addr, uint8_t *buf, uint16_t len);
/* Writes only bytes that differ (EEPROM wears out). */
void hw_eeprom_update(uint16_t addr, const uint8_t *buf, uint16_t len);
/* Wait for the output to drain, then restart through the watchdog. Never returns on AVR. */
void hw_reset(void);

#ifdef __cplusplus
}
#endif

#endif
