/* Tiny bounded string builder and number parser (no printf: it costs 1.5 KB of flash). */
#ifndef RIG_TEXT_H
#define RIG_TEXT_H

#include <stdint.h>
#include <stddef.h>

struct Text {
    char *buf;
    uint8_t cap; /* bytes available, including room for a terminating NUL */
    uint8_t len;
};

void text_init(Text &t, char *buf, uint8_t cap);
void text_str(Text &t, const char *s);
void text_char(Text &t, char c);
void text_u32(Text &t, uint32_t v);
void text_hex4(Text &t, uint16_t v); /* exactly 4 upper-case hex digits */
void text_hex(Text &t, uint8_t v);   /* minimal upper-case hex, "0" for zero */

/* Whole token must be 1..RIG_NUMBER_DIGITS decimal digits (PROTOCOL.md), value <= max. */
#define RIG_NUMBER_DIGITS 9
bool parse_u32(const char *s, uint32_t max, uint32_t *out);

#endif
