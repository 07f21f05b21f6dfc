/* UART0 <-> pseudo-terminal bridge (replaces simavr 1.6's uart_pty, which stalls after ~1 KB). */
#ifndef RIGSIM_BRIDGE_H
#define RIGSIM_BRIDGE_H

#include <stddef.h>
#include <sim_avr.h>
#include <sim_irq.h>

#define BRIDGE_BUF 65536

typedef struct bridge_t {
    avr_t *avr;
    int master, slave;        /* slave stays open so the pty survives host reconnects */
    char slave_name[128];
    avr_irq_t *uart_in;       /* raise with a byte to deliver it to the AVR */
    int room;                 /* the UART's input FIFO accepts bytes (XON seen, no XOFF since) */
    unsigned char in[BRIDGE_BUF];   /* host -> AVR, waiting for room */
    size_t in_head, in_len;
    unsigned char out[BRIDGE_BUF];  /* AVR -> host, waiting for the pty */
    size_t out_len;
} bridge_t;

int bridge_init(bridge_t *b, avr_t *avr);
/* Move bytes both ways; call every few thousand cycles. */
void bridge_poll(bridge_t *b);
void bridge_close(bridge_t *b);

#endif
