/* Measure servo pulse widths and light PWM duty from the simulated pins. */
#ifndef RIGSIM_PINS_H
#define RIGSIM_PINS_H

#include <stdio.h>
#include <sim_avr.h>

#define PINS_SERVOS 4
#define PINS_LIGHTS 2

typedef struct {
    char port;
    int bit;
    int level;
    avr_cycle_count_t rise; /* cycle of the last rising edge, 0 = none seen */
    avr_cycle_count_t last_edge;
    double last_us, min_us, max_us; /* servo: pulse widths */
    avr_cycle_count_t high, period;  /* light: last complete PWM period */
    unsigned long count;
} pin_t;

typedef struct pins_t {
    avr_t *avr;
    pin_t servo[PINS_SERVOS];
    pin_t light[PINS_LIGHTS];
    const char *path;
    FILE *pulses;   /* append-only log of every servo pulse, or NULL */
    int suspended;  /* ignore edges while the simulator itself resets the MCU */
} pins_t;

int pins_init(pins_t *p, avr_t *avr, const char *snapshot_path, const char *pulses_path);
/* Rewrite the snapshot file atomically (and flush the pulse log). */
void pins_snapshot(pins_t *p);
/* Around a simulator-forced reset: forget half-seen pulses instead of logging runts. */
void pins_suspend(pins_t *p, int on);
void pins_close(pins_t *p);

#endif
