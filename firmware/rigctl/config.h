/* Build-time constants shared by the portable core and the AVR glue. */
#ifndef RIG_CONFIG_H
#define RIG_CONFIG_H

#define RIG_FW_VERSION "1.0.0"
#define RIG_PROTO_VERSION 1

#define RIG_SERVOS 4          /* pan, tilt, light arm A, light arm B */
#define RIG_LIGHTS 2          /* two dimmable light channels */

#define RIG_LINE_MAX 80       /* bytes before LF, PROTOCOL.md "Transport" */
#define RIG_REPLY_MAX 160     /* longest framed reply incl. "#65535 " and "*XXXX" */
#define RIG_MAX_TOKENS 10     /* more words than this is always a bad argument */

/* The loop never waits for the UART (PROTOCOL.md "Flow"): a line is executed only when the
 * transmit buffer can take RIG_REPLY_MAX + LF at once, else answered "err 8 busy"; a byte is
 * read only when the longest such short reply fits. The UART's transmit buffer
 * (SERIAL_TX_BUFFER_SIZE in the Makefile, 256) holds a full reply plus pending events, so a
 * host that waits for each reply is never answered busy. */
#define RIG_SHORT_REPLY_MAX 32 /* "#65535 err 4 bad-crc*XXXX\n" is the longest: 26 bytes */
#define RIG_EVENT_MAX 64

#define RIG_TIMEOUT_DEFAULT_MS 10000UL
#define RIG_TIMEOUT_MAX_MS 3600000UL  /* PROTOCOL.md "Argument ranges" */
#define RIG_MOVE_MAX_MS 3600000UL

/* Limits, PROTOCOL.md "Limits and defaults". */
#define RIG_PULSE_MIN_US 400
#define RIG_PULSE_MAX_US 2600
#define RIG_SLEW_MIN 1
#define RIG_SLEW_MAX 60000UL
#define RIG_DEFAULT_MIN 1000
#define RIG_DEFAULT_MAX 2000
#define RIG_DEFAULT_PARK 1500
#define RIG_DEFAULT_SLEW 1000

/* Status flags. */
#define RIG_FLAG_EEPROM_DEFAULTS 0x01
#define RIG_FLAG_SAFE 0x02
#define RIG_FLAG_WATCHDOG_BOOT 0x04

#endif
