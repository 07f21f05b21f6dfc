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
    g_app.reset_pending = false;
    g_app.done_owed = false;
    g_app.safe_owed = false;
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
    /* Entering the safe state is reported once: only move, light or park (which clear the
     * flag) re-arm it; a status poll does not. */
    if (g_app.flags & RIG_FLAG_SAFE)
        return;
    uint32_t quiet = hw_millis() - proto_last_activity();
    if (quiet < g_app.timeout_ms)
        return;
    /* Lights off (they heat and glare), servos hold: moving an arm with nobody
     * watching is more dangerous than leaving it where it is. */
    for (uint8_t ch = 0; ch < RIG_LIGHTS; ch++)
        app_set_light(ch, 0);
    motion_hold();
    g_app.flags |= RIG_FLAG_SAFE;
    g_app.safe_owed = true;
}

void app_motion_tick(void)
{
    /* Interpolating at 1 kHz is plenty: the servo frame only samples every 20 ms. */
    uint32_t now = hw_micros();
    if (now - last_motion_us >= 1000) {
        last_motion_us = now;
        if (motion_update(now))
            g_app.done_owed = true;
    }
}

void app_poll(void)
{
    app_motion_tick();
    check_host_silence();
    /* Events wait for room in the transmit buffer rather than stall the loop. */
    if (g_app.done_owed && proto_event("done"))
        g_app.done_owed = false;
    if (g_app.safe_owed && proto_event("safe cause=host-timeout"))
        g_app.safe_owed = false;
}
