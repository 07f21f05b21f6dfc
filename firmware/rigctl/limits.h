/* Per-servo limits kept in EEPROM with a layout version and a CRC. */
#ifndef RIG_LIMITS_H
#define RIG_LIMITS_H

#include <stdint.h>
#include "config.h"

struct ServoLimits {
    uint16_t min;   /* us */
    uint16_t max;   /* us */
    uint16_t park;  /* us */
    uint16_t slew;  /* us per second */
};

extern ServoLimits g_limits[RIG_SERVOS];

/* Load from EEPROM. Returns false when the image failed its checks and defaults
 * were restored and written back (the caller reports "!eeprom defaults"). */
bool limits_load(void);

/* True when the values obey PROTOCOL.md (400..2600, min<=park<=max, slew 1..60000). */
bool limits_valid(const ServoLimits &l);

/* Store one channel; writes EEPROM only if something changed. */
void limits_store(uint8_t ch, const ServoLimits &l);

/* EEPROM layout, documented in README.md. */
#define RIG_EEPROM_BASE 0
#define RIG_EEPROM_VERSION 1
#define RIG_EEPROM_SIZE (1 + RIG_SERVOS * 8 + 2)

#endif
