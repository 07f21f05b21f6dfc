/*
 * Servo pulses without a Servo library: Timer1 runs free at 2 MHz (prescaler 8,
 * 0.5 us ticks) and one compare interrupt walks through the channels. Each
 * interrupt ends the current channel's pulse and starts the next one, so the
 * channels are pulsed one after another, then the line idles until the 20 ms
 * frame is over.
 *
 * Edges are exact: the compare interrupt is scheduled EARLY ticks before the
 * edge and the handler busy-waits on TCNT1 for the edge itself. Another
 * interrupt (millis, UART) that delays our entry by up to EARLY therefore does
 * not move the edge; without this the widths jitter by +-7 us. Edge times are
 * always advanced from the previous edge, never from "now", so nothing drifts.
 */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <util/atomic.h>
#include "config.h"
#include "servo_out.h"

#define FRAME_TICKS 40000U /* 20 ms */
#define EARLY 48U          /* 24 us of head start for the interrupt */

/* Pin map (README.md): D9=PB1 pan, D10=PB2 tilt, D8=PB0 arm A, D12=PB4 arm B. */
static const uint8_t mask[RIG_SERVOS] = {_BV(PB1), _BV(PB2), _BV(PB0), _BV(PB4)};

static volatile uint16_t ticks[RIG_SERVOS];
static volatile uint8_t cur = RIG_SERVOS; /* channel whose pulse is high; RIG_SERVOS = gap */
static uint16_t frame_start;
static uint16_t edge; /* timer value of the next edge */

ISR(TIMER1_COMPA_vect)
{
    uint8_t c = cur;
    uint8_t port = PORTB;
    if (c < RIG_SERVOS)
        port &= (uint8_t)~mask[c];
    c++;
    if (c > RIG_SERVOS) { /* gap over: a new frame starts at this edge */
        c = 0;
        frame_start = edge;
    }
    uint16_t next;
    if (c < RIG_SERVOS) {
        port |= mask[c];
        next = edge + ticks[c];
    } else {
        next = frame_start + FRAME_TICKS; /* 16-bit wrap matches the timer's own */
    }
    while ((int16_t)(TCNT1 - edge) < 0) {
    }
    PORTB = port; /* one write: previous channel falls as the next one rises */
    cur = c;
    edge = next;
    OCR1A = next - EARLY;
}

void servo_out_set(uint8_t ch, uint16_t t)
{
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { ticks[ch] = t; } /* 16-bit store is not atomic */
}

void servo_out_stop(void)
{
    /* Wait for the gap between frames so no servo sees a cut-short pulse
     * (a runt pulse makes a real servo jerk). */
    while (cur != RIG_SERVOS) {
    }
    TIMSK1 = 0;
}

void servo_out_begin(void)
{
    for (uint8_t ch = 0; ch < RIG_SERVOS; ch++) {
        DDRB |= mask[ch];
        PORTB &= (uint8_t)~mask[ch];
    }
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE)
    {
        /* The Arduino core left Timer1 in 8-bit phase-correct PWM: back to normal mode. */
        TCCR1A = 0;
        TCCR1B = _BV(CS11); /* clk/8 */
        edge = TCNT1 + 400;
        OCR1A = edge - EARLY;
        TIFR1 = _BV(OCF1A);
        TIMSK1 = _BV(OCIE1A);
    }
}
