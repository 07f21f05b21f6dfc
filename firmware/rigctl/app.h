/* Controller state and the main-loop duties that are not tied to one command line. */
#ifndef RIG_APP_H
#define RIG_APP_H

#include <stdint.h>
#include "config.h"

enum BootCause { BOOT_POWER, BOOT_WATCHDOG, BOOT_RESET };

struct AppState {
    uint32_t timeout_ms;       /* host-silence timeout, 0 = off */
    uint8_t flags;             /* RIG_FLAG_* */
    uint8_t light[RIG_LIGHTS]; /* current duty */
    bool reset_pending;        /* restart once the reply is out */
    bool done_owed;            /* "!done" due, waiting for room in the transmit buffer */
    bool safe_owed;            /* "!safe" due, likewise */
    uint16_t session;          /* host's session token, 0 after every boot (PROTOCOL.md "Sessions") */
};

extern AppState g_app;

/* Load limits, park servos, lights off, send "!boot" (and "!eeprom defaults"). */
void app_boot(BootCause cause);

/* Call often from the main loop: motion, "!done", host-silence timeout. */
void app_poll(void);

/* Motion only (1 kHz interpolation): also called while the board waits for slow hardware
 * (EEPROM writes), so the servos never wait for anything but time. */
void app_motion_tick(void);

void app_set_light(uint8_t ch, uint8_t level);

#endif
