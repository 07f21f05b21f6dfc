/* Servo pulse train on Timer1 (AVR only). */
#ifndef RIG_SERVO_OUT_H
#define RIG_SERVO_OUT_H

#include <stdint.h>

void servo_out_begin(void);
void servo_out_set(uint8_t ch, uint16_t ticks);
/* Stop after the current frame's pulses, leaving every pin low. */
void servo_out_stop(void);

#endif
