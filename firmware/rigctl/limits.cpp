#include "limits.h"
#include "crc16.h"
#include "hw.h"

ServoLimits g_limits[RIG_SERVOS];

/*
 * Image: [version][ch0 min max park slew][ch1 ...]...[crc lo][crc hi]
 * Every u16 little-endian, spelled out byte by byte so the layout does not
 * depend on the compiler's struct packing or the host's endianness.
 */
static void encode(uint8_t *img)
{
    img[0] = RIG_EEPROM_VERSION;
    uint8_t *p = img + 1;
    for (uint8_t ch = 0; ch < RIG_SERVOS; ch++) {
        const uint16_t v[4] = {g_limits[ch].min, g_limits[ch].max, g_limits[ch].park, g_limits[ch].slew};
        for (uint8_t i = 0; i < 4; i++) {
            *p++ = (uint8_t)(v[i] & 0xFF);
            *p++ = (uint8_t)(v[i] >> 8);
        }
    }
    uint16_t crc = crc16(img, RIG_EEPROM_SIZE - 2);
    *p++ = (uint8_t)(crc & 0xFF);
    *p = (uint8_t)(crc >> 8);
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

bool limits_valid(const ServoLimits &l)
{
    return l.min >= RIG_PULSE_MIN_US && l.max <= RIG_PULSE_MAX_US && l.min <= l.park &&
           l.park <= l.max && l.slew >= RIG_SLEW_MIN && l.slew <= RIG_SLEW_MAX;
}

static void set_defaults(void)
{
    for (uint8_t ch = 0; ch < RIG_SERVOS; ch++) {
        g_limits[ch].min = RIG_DEFAULT_MIN;
        g_limits[ch].max = RIG_DEFAULT_MAX;
        g_limits[ch].park = RIG_DEFAULT_PARK;
        g_limits[ch].slew = RIG_DEFAULT_SLEW;
    }
}

bool limits_load(void)
{
    uint8_t img[RIG_EEPROM_SIZE];
    hw_eeprom_read(RIG_EEPROM_BASE, img, sizeof img);
    bool ok = img[0] == RIG_EEPROM_VERSION &&
              crc16(img, RIG_EEPROM_SIZE - 2) == get16(img + RIG_EEPROM_SIZE - 2);
    for (uint8_t ch = 0; ok && ch < RIG_SERVOS; ch++) {
        const uint8_t *p = img + 1 + ch * 8;
        ServoLimits l = {get16(p), get16(p + 2), get16(p + 4), get16(p + 6)};
        /* A CRC-correct image with impossible values (written by a future or buggy
         * firmware) is treated like a corrupt one: never drive from bad limits. */
        ok = limits_valid(l);
        g_limits[ch] = l;
    }
    if (ok)
        return true;
    set_defaults();
    encode(img);
    hw_eeprom_update(RIG_EEPROM_BASE, img, sizeof img);
    return false;
}

void limits_store(uint8_t ch, const ServoLimits &l)
{
    ServoLimits &cur = g_limits[ch];
    if (cur.min == l.min && cur.max == l.max && cur.park == l.park && cur.slew == l.slew)
        return;
    cur = l;
    uint8_t img[RIG_EEPROM_SIZE];
    encode(img);
    hw_eeprom_update(RIG_EEPROM_BASE, img, sizeof img);
}
