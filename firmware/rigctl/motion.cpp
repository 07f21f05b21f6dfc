#include "motion.h"
#include "limits.h"
#include "hw.h"

struct Axis {
    uint16_t start;   /* ticks at the start of the current move */
    uint16_t target;  /* ticks */
    uint16_t pos;     /* ticks, what is driven now */
    uint32_t dur_ms;  /* this axis' duration (same for all axes of a coordinated move) */
};

static Axis axes[RIG_SERVOS];
static bool active;          /* a move (or park) is in progress, "!done" still owed */
static uint32_t max_dur_ms;  /* when the whole move is over */
static uint32_t elapsed_ms;  /* time since the move started, kept as ms + us so no */
static uint16_t frac_us;     /* 32-bit microsecond counter can wrap during a long move */
static uint32_t last_us;

static uint16_t lo_ticks(uint8_t ch) { return (uint16_t)(g_limits[ch].min * 2); }
static uint16_t hi_ticks(uint8_t ch) { return (uint16_t)(g_limits[ch].max * 2); }

/* Last line of defence: whatever the planner says, the pin only sees in-limit pulses. */
static void drive(uint8_t ch)
{
    uint16_t t = axes[ch].pos;
    if (t < lo_ticks(ch)) t = lo_ticks(ch);
    if (t > hi_ticks(ch)) t = hi_ticks(ch);
    hw_servo_ticks(ch, t);
}

void motion_init(void)
{
    for (uint8_t ch = 0; ch < RIG_SERVOS; ch++) {
        uint16_t p = (uint16_t)(g_limits[ch].park * 2);
        axes[ch].start = axes[ch].target = axes[ch].pos = p;
        axes[ch].dur_ms = 0;
        drive(ch);
    }
    active = false;
}

/* Time a channel needs for its distance at its slew limit, rounded up to whole ms. */
static uint32_t slew_ms(uint8_t ch)
{
    const Axis &a = axes[ch];
    uint32_t dist = a.target > a.pos ? a.target - a.pos : a.pos - a.target; /* ticks */
    uint32_t slew = g_limits[ch].slew;                                          /* us/s */
    /* ms = dist_us * 1000 / slew = dist_ticks * 500 / slew */
    return (dist * 500UL + slew - 1) / slew;
}

static void begin(void)
{
    for (uint8_t ch = 0; ch < RIG_SERVOS; ch++)
        axes[ch].start = axes[ch].pos;
    elapsed_ms = 0;
    frac_us = 0;
    last_us = hw_micros();
    active = true;
}

uint32_t motion_move(const uint16_t target_us[RIG_SERVOS], uint32_t req_ms)
{
    motion_update(hw_micros()); /* a move while moving starts from where we are now */
    for (uint8_t ch = 0; ch < RIG_SERVOS; ch++)
        if (target_us[ch])
            axes[ch].target = (uint16_t)(target_us[ch] * 2);
    /* Coordinated: every axis (named or still travelling to an older target) takes
     * the same time, long enough for the slowest one at its slew limit. */
    uint32_t eff = req_ms;
    for (uint8_t ch = 0; ch < RIG_SERVOS; ch++) {
        uint32_t need = slew_ms(ch);
        if (need > eff) eff = need;
    }
    for (uint8_t ch = 0; ch < RIG_SERVOS; ch++)
        axes[ch].dur_ms = eff;
    max_dur_ms = eff;
    begin();
    return eff;
}

uint32_t motion_park(void)
{
    /* Exactly "move 0" to every park pulse: one motion model, all channels arrive together. */
    uint16_t park[RIG_SERVOS];
    for (uint8_t ch = 0; ch < RIG_SERVOS; ch++)
        park[ch] = g_limits[ch].park;
    return motion_move(park, 0);
}

void motion_hold(void)
{
    motion_update(hw_micros());
    for (uint8_t ch = 0; ch < RIG_SERVOS; ch++)
        axes[ch].start = axes[ch].target = axes[ch].pos;
    active = false;
}

void motion_limits_changed(uint8_t ch)
{
    motion_update(hw_micros());
    Axis &a = axes[ch];
    uint16_t lo = lo_ticks(ch), hi = hi_ticks(ch);
    if (a.pos < lo || a.pos > hi || a.target < lo || a.target > hi) {
        /* The channel is now outside its allowed range: it jumps to the nearest
         * allowed pulse and stays there, rather than drive a forbidden one. */
        uint16_t p = a.pos < lo ? lo : (a.pos > hi ? hi : a.pos);
        a.start = a.target = a.pos = p;
        a.dur_ms = 0;
        drive(ch);
    }
    if (active) {
        /* A lower slew limit applies at once: re-plan the rest of the move from here. It keeps
         * its end unless the new limit needs longer (channels that fitted before still fit). */
        const uint16_t keep[RIG_SERVOS] = {0};
        motion_move(keep, max_dur_ms > elapsed_ms ? max_dur_ms - elapsed_ms : 0);
    }
}

bool motion_update(uint32_t now_us)
{
    if (!active)
        return false;
    uint32_t d = now_us - last_us;
    last_us = now_us;
    elapsed_ms += d / 1000;
    frac_us += (uint16_t)(d % 1000);
    if (frac_us >= 1000) {
        frac_us -= 1000;
        elapsed_ms++;
    }
    for (uint8_t ch = 0; ch < RIG_SERVOS; ch++) {
        Axis &a = axes[ch];
        if (elapsed_ms >= a.dur_ms) {
            a.pos = a.target;
        } else {
            /* Float is exact enough here (24-bit mantissa) and avoids a 64-bit
             * multiply for moves that last up to hours. */
            float f = ((float)elapsed_ms + (float)frac_us * 0.001f) / (float)a.dur_ms;
            int32_t delta = (int32_t)a.target - (int32_t)a.start;
            a.pos = (uint16_t)((int32_t)a.start + (int32_t)((float)delta * f));
        }
        drive(ch);
    }
    if (elapsed_ms >= max_dur_ms) {
        active = false;
        return true;
    }
    return false;
}

bool motion_moving(void) { return active; }
uint16_t motion_pos_us(uint8_t ch) { return (uint16_t)((axes[ch].pos + 1) / 2); }
uint16_t motion_target_us(uint8_t ch) { return (uint16_t)((axes[ch].target + 1) / 2); }
