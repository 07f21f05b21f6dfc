/* CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no xor out). */
#ifndef RIG_CRC16_H
#define RIG_CRC16_H

#include <stdint.h>
#include <stddef.h>

#ifdef __AVR__
#include <util/crc16.h>
/* avr-libc's xmodem update is exactly the CCITT-FALSE step when started from 0xFFFF. */
static inline uint16_t crc16_step(uint16_t crc, uint8_t b) { return _crc_xmodem_update(crc, b); }
#else
static inline uint16_t crc16_step(uint16_t crc, uint8_t b)
{
    crc ^= (uint16_t)b << 8;
    for (uint8_t i = 0; i < 8; i++)
        crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    return crc;
}
#endif

static inline uint16_t crc16(const void *data, size_t len)
{
    const uint8_t *p = (const uint8_t *)data;
    uint16_t crc = 0xFFFF;
    while (len--)
        crc = crc16_step(crc, *p++);
    return crc;
}

#endif
