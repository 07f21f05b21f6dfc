/*
 * Slew-limited, coordinated servo motion. Positions are kept in 0.5 us ticks
 * (the Timer1 resolution) and interpolated linearly in time.
 */
#ifndef RIG_MOTION_H
#define RIG_MOTION_H

#include <stdint.h>
#include "config.h"

/* Drive every servo at its park pulse at once (the physical position is unknown at boot). */
void motion_init(void);

/* target_us[ch] == 0 keeps that channel's current target. Targets must already be
 * within limits. Returns the effective duration in ms. */
uint32_t motion_move(const uint16_t target_us[RIG_SERVOS], uint32_t req_ms);

/* Every servo to its park pulse: a coordinated move_ms = 0. Returns the effective ms. */
uint32_t motion_park(void);

/* Stop where we are: target := current position. No "!done" follows. */
void motion_hold(void);

/* After one channel's limits changed: clamp it so no pulse outside them is driven, and re-plan
 * a move in progress so it obeys the new slew limit from now on. */
void motion_limits_changed(uint8_t ch);

/* Advance to now_us and push pulses to the hardware. True once when a move completes. */
bool motion_update(uint32_t now_us);

bool motion_moving(void);
uint16_t motion_pos_us(uint8_t ch);
uint16_t motion_target_us(uint8_t ch);

#endif
