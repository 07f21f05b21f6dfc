#include "text.h"

void text_init(Text &t, char *buf, uint8_t cap)
{
    t.buf = buf;
    t.cap = cap;
    t.len = 0;
    buf[0] = 0;
}

void text_char(Text &t, char c)
{
    if (t.len + 1 < t.cap) { /* silently truncate: every reply fits by construction */
        t.buf[t.len++] = c;
        t.buf[t.len] = 0;
    }
}

void text_str(Text &t, const char *s)
{
    while (*s)
        text_char(t, *s++);
}

void text_u32(Text &t, uint32_t v)
{
    char tmp[10];
    uint8_t n = 0;
    /* 32-bit division is slow on the AVR (~600 cycles): only use it while needed;
     * most numbers (pulses, levels) fit the much cheaper 16-bit path. */
    while (v > 0xFFFFu) {
        uint32_t q = v / 10;
        tmp[n++] = (char)('0' + (uint8_t)(v - q * 10));
        v = q;
    }
    uint16_t w = (uint16_t)v;
    do {
        uint16_t q = w / 10;
        tmp[n++] = (char)('0' + (uint8_t)(w - q * 10));
        w = q;
    } while (w);
    while (n)
        text_char(t, tmp[--n]);
}

static const char HEX[] = "0123456789ABCDEF";

void text_hex4(Text &t, uint16_t v)
{
    for (int8_t s = 12; s >= 0; s -= 4)
        text_char(t, HEX[(v >> s) & 0xF]);
}

void text_hex(Text &t, uint8_t v)
{
    if (v >= 16)
        text_char(t, HEX[v >> 4]);
    text_char(t, HEX[v & 0xF]);
}

bool parse_u32(const char *s, uint32_t max, uint32_t *out)
{
    if (!*s)
        return false;
    uint32_t v = 0;
    for (uint8_t n = 0; *s; s++, n++) {
        if (n == RIG_NUMBER_DIGITS)
            return false;
        if (*s < '0' || *s > '9')
            return false;
        uint8_t d = (uint8_t)(*s - '0');
        if (d > max || v > (max - d) / 10) /* v*10 + d > max, without overflowing */
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}
