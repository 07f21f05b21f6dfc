#include "app.h"
#include "hw.h"
#include "limits.h"
#include "motion.h"
#include "proto.h"
#include "text.h"

AppState g_app;

static uint32_t last_motion_us;

void app_set_light(uint8_t ch, uint8_t level)
{
    g_app.light[ch] = level;
    hw_light(ch, level);
}

void app_boot(BootCause cause)
{
    g_app.timeout_ms = RIG_TIMEOUT_DEFAULT_MS;
    g_app.flags = cause == BOOT_WATCHDOG ? RIG_FLAG_WATCHDOG_BOOT : 0;
    g_app.safe_sent = false;
    g_app.reset_pending = false;
    g_app.session = 0;
    for (uint8_t ch = 0; ch < RIG_LIGHTS; ch++)
        app_set_light(ch, 0);
    bool eeprom_ok = limits_load();
    if (!eeprom_ok)
        g_app.flags |= RIG_FLAG_EEPROM_DEFAULTS;
    motion_init();
    proto_init();

    char buf[64];
    Text t;
    text_init(t, buf, sizeof buf);
    text_str(t, "boot fw=" RIG_FW_VERSION " proto=");
    text_u32(t, RIG_PROTO_VERSION);
    text_str(t, " servos=");
    text_u32(t, RIG_SERVOS);
    text_str(t, " lights=");
    text_u32(t, RIG_LIGHTS);
    text_str(t, cause == BOOT_WATCHDOG ? " cause=watchdog" : cause == BOOT_RESET ? " cause=reset" : " cause=power");
    proto_event(t.buf);
    if (!eeprom_ok)
        proto_event("eeprom defaults");
    last_motion_us = hw_micros();
}

static void check_host_silence(void)
{
    if (!g_app.timeout_ms) {
        return;
    }
    uint32_t quiet = hw_millis() - proto_last_activity();
    if (quiet < g_app.timeout_ms) {
        g_app.safe_sent = false; /* a line arrived since: re-arm */
        return;
    }
    if (g_app.safe_sent)
        return;
    /* Lights off (they heat and glare), servos hold: moving an arm with nobody
     * watching is more dangerous than leaving it where it is. */
    for (uint8_t ch = 0; ch < RIG_LIGHTS; ch++)
        app_set_light(ch, 0);
    motion_hold();
    g_app.flags |= RIG_FLAG_SAFE;
    g_app.safe_sent = true;
    proto_event("safe cause=host-timeout");
}

void app_poll(void)
{
    /* Interpolating at 1 kHz is plenty: the servo frame only samples every 20 ms. */
    uint32_t now = hw_micros();
    if (now - last_motion_us >= 1000) {
        last_motion_us = now;
        if (motion_update(now))
            proto_event("done");
    }
    check_host_silence();
}
