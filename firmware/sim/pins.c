#include "pins.h"

#include <stdio.h>
#include <string.h>

#include <avr_ioport.h>
#include <sim_io.h>

#define CYCLES_PER_US 16.0
/* Timer0 fast PWM at 16 MHz / 64 / 256 has a 1.024 ms period: several periods
 * without an edge means the pin is held at a constant level (duty 0 or 255). */
#define LIGHT_STILL_CYCLES (16000UL * 5)

/* Pin map, same as firmware/rigctl/README.md. */
static const struct { char port; int bit; const char *name; } SERVO_PINS[PINS_SERVOS] = {
    {'B', 1, "D9"}, {'B', 2, "D10"}, {'B', 0, "D8"}, {'B', 4, "D12"}};
static const struct { char port; int bit; const char *name; } LIGHT_PINS[PINS_LIGHTS] = {
    {'D', 5, "D5"}, {'D', 6, "D6"}};

static pins_t *g_pins; /* the IRQ callbacks get the pin, the log needs the whole set */

static void on_servo(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    pin_t *s = param;
    int v = value ? 1 : 0;
    if (v == s->level)
        return; /* the IRQ fires on every PORT write, not only on changes */
    s->level = v;
    avr_cycle_count_t now = g_pins->avr->cycle;
    s->last_edge = now;
    if (g_pins->suspended) {
        s->rise = 0;
        return;
    }
    if (v) {
        s->rise = now;
        return;
    }
    if (!s->rise)
        return;
    double us = (double)(now - s->rise) / CYCLES_PER_US;
    s->last_us = us;
    if (!s->count || us < s->min_us) s->min_us = us;
    if (!s->count || us > s->max_us) s->max_us = us;
    s->count++;
    if (g_pins->pulses)
        fprintf(g_pins->pulses, "%.1f %d %.2f\n", (double)s->rise / CYCLES_PER_US,
                (int)(s - g_pins->servo), us);
    s->rise = 0;
}

static void on_light(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    pin_t *l = param;
    int v = value ? 1 : 0;
    if (v == l->level)
        return;
    l->level = v;
    avr_cycle_count_t now = g_pins->avr->cycle;
    if (v) {
        if (l->rise) {
            l->period = now - l->rise;
            l->high = l->last_edge > l->rise ? l->last_edge - l->rise : 0; /* last_edge = fall */
        }
        l->rise = now;
    }
    l->last_edge = now;
}

static int light_duty(const pin_t *l, avr_cycle_count_t now)
{
    if (!l->period || now - l->last_edge > LIGHT_STILL_CYCLES)
        return l->level ? 255 : 0;
    /* Arduino fast PWM: OCR = v gives a high time of (v + 1) / 256 of the period. */
    double d = (double)l->high * 256.0 / (double)l->period - 1.0;
    int v = (int)(d + 0.5);
    return v < 0 ? 0 : (v > 255 ? 255 : v);
}

static void hook(avr_t *avr, pin_t *p, char port, int bit, avr_irq_notify_t fn)
{
    p->port = port;
    p->bit = bit;
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ(port), bit), fn, p);
}

int pins_init(pins_t *p, avr_t *avr, const char *snapshot_path, const char *pulses_path)
{
    memset(p, 0, sizeof *p);
    p->avr = avr;
    p->path = snapshot_path;
    g_pins = p;
    for (int i = 0; i < PINS_SERVOS; i++)
        hook(avr, &p->servo[i], SERVO_PINS[i].port, SERVO_PINS[i].bit, on_servo);
    for (int i = 0; i < PINS_LIGHTS; i++)
        hook(avr, &p->light[i], LIGHT_PINS[i].port, LIGHT_PINS[i].bit, on_light);
    if (pulses_path) {
        p->pulses = fopen(pulses_path, "w");
        if (!p->pulses)
            return -1;
    }
    return 0;
}

void pins_snapshot(pins_t *p)
{
    if (p->pulses)
        fflush(p->pulses);
    if (!p->path)
        return;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", p->path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    avr_cycle_count_t now = p->avr->cycle;
    fprintf(f, "time t_us=%.1f\n", (double)now / CYCLES_PER_US);
    for (int i = 0; i < PINS_SERVOS; i++) {
        const pin_t *s = &p->servo[i];
        fprintf(f, "servo ch=%d pin=%s last=%.2f min=%.2f max=%.2f count=%lu\n", i,
                SERVO_PINS[i].name, s->last_us, s->min_us, s->max_us, s->count);
    }
    for (int i = 0; i < PINS_LIGHTS; i++) {
        const pin_t *l = &p->light[i];
        fprintf(f, "light ch=%d pin=%s duty=%d level=%d high_us=%.1f period_us=%.1f\n", i,
                LIGHT_PINS[i].name, light_duty(l, now), l->level, l->high / CYCLES_PER_US,
                l->period / CYCLES_PER_US);
    }
    fclose(f);
    rename(tmp, p->path);
}

void pins_suspend(pins_t *p, int on)
{
    p->suspended = on;
    for (int i = 0; i < PINS_SERVOS; i++)
        p->servo[i].rise = 0;
}

void pins_close(pins_t *p)
{
    if (p->pulses)
        fclose(p->pulses);
    p->pulses = NULL;
}
