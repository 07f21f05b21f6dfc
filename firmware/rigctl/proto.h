/*
 * Wire protocol core (PROTOCOL.md): line assembly, plain and checked framing,
 * the cached reply for idempotent retransmission, and events. Portable C++:
 * it only talks to the board through hw.h.
 */
#ifndef RIG_PROTO_H
#define RIG_PROTO_H

#include <stdint.h>
#include "text.h"

void proto_init(void);

/* Feed one received byte. A completed line is executed (or answered busy) before this returns. */
void proto_feed(uint8_t byte);

/* Read and handle what the host sent, as far as it can be answered without waiting. */
void proto_poll(void);

/* Send an event line: "!" + body + "*" + CRC. False (nothing sent) when the transmit buffer
 * cannot take it now; the caller sends it later. */
bool proto_event(const char *body);

/* Millis timestamp of the last complete line (any kind): host activity. */
uint32_t proto_last_activity(void);

/* Implemented in commands.cpp: run one command (no framing) and write the reply
 * body ("ok ..." or "err <code> <text>") into out. */
void commands_exec(char *cmd, Text &out);

/* Implemented in commands.cpp: work that must wait until the reply is on the
 * wire (the "reset" command restarts only after its "ok" went out). */
void commands_after_reply(void);

#endif
