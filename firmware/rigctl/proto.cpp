#include "proto.h"
#include "config.h"
#include "crc16.h"
#include "hw.h"

/* Line assembly state. The buffer holds at most RIG_LINE_MAX bytes; anything
 * longer only sets a flag until the LF, so memory stays bounded. */
static char line[RIG_LINE_MAX + 1];
static uint8_t line_len;
static uint16_t line_total; /* bytes seen this line, saturating */
static bool line_bad;       /* a byte outside 0x20..0x7E was seen */
static bool cr_pending;     /* a CR is ignored only right before LF */
static bool line_lossy;     /* bytes of this line may have been lost in a full receive buffer */
static bool rx_lossy;       /* the receive buffer overflowed; cleared once it was read empty */
static uint32_t last_activity;

/* Cache of the last executed checked command: its sequence number and full reply. */
static bool cache_valid;
static uint16_t cache_seq;
static char cache[RIG_REPLY_MAX];
static uint8_t cache_len;

void proto_init(void)
{
    line_len = 0;
    line_total = 0;
    line_bad = false;
    cr_pending = false;
    line_lossy = false;
    rx_lossy = false;
    cache_valid = false;
    last_activity = hw_millis();
}

uint32_t proto_last_activity(void) { return last_activity; }

static void send_line(const char *s, uint8_t len)
{
    hw_write(s, len);
    hw_write("\n", 1);
}

static void send_plain(const char *s)
{
    uint8_t n = 0;
    while (s[n])
        n++;
    send_line(s, n);
}

/* Append "*XXXX" computed over everything already in t. */
static void seal(Text &t)
{
    uint16_t crc = crc16(t.buf, t.len);
    text_char(t, '*');
    text_hex4(t, crc);
}

bool proto_event(const char *body)
{
    char buf[RIG_EVENT_MAX];
    Text t;
    text_init(t, buf, sizeof buf);
    text_char(t, '!');
    text_str(t, body);
    seal(t);
    if (hw_tx_room() < t.len + 1u)
        return false; /* the caller keeps it owed and tries again */
    send_line(t.buf, t.len);
    return true;
}

/* A full reply fits the transmit buffer now, and the line arrived whole: it may run. */
static bool can_run(void) { return !line_lossy && hw_tx_room() >= RIG_REPLY_MAX + 1; }

static bool is_hex_upper(char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); }
static uint8_t hex_val(char c) { return (uint8_t)(c <= '9' ? c - '0' : c - 'A' + 10); }

/* "#<seq> <command>*<CRC>" */
static void handle_checked(void)
{
    uint8_t i = 1;
    uint32_t seq = 0;
    while (i < line_len && line[i] >= '0' && line[i] <= '9') {
        seq = seq * 10 + (uint32_t)(line[i] - '0');
        if (seq > 65535 || i > RIG_NUMBER_DIGITS) {
            send_plain("err 7 bad-frame");
            return;
        }
        i++;
    }
    /* Need: at least one digit, a space, a non-empty command, '*' and 4 hex digits at the end,
     * and no other '*' (payloads never contain one). */
    uint8_t star = (uint8_t)(line_len >= 5 ? line_len - 5 : 0);
    bool ok = i > 1 && i < line_len && line[i] == ' ' && line_len >= 5 && star > i + 1 &&
              line[star] == '*';
    for (uint8_t k = i + 1; ok && k < star; k++)
        if (line[k] == '*')
            ok = false;
    for (uint8_t k = star + 1; ok && k < line_len; k++)
        if (!is_hex_upper(line[k]))
            ok = false;
    if (!ok) {
        send_plain("err 7 bad-frame");
        return;
    }
    uint16_t got = 0;
    for (uint8_t k = star + 1; k < line_len; k++)
        got = (uint16_t)((got << 4) | hex_val(line[k]));

    char buf[RIG_REPLY_MAX];
    Text t;
    text_init(t, buf, sizeof buf);
    text_char(t, '#');
    text_u32(t, seq);
    text_char(t, ' ');

    if (crc16(line, star) != got) {
        /* Not executed and not cached: the host retransmits with the same seq. */
        text_str(t, "err 4 bad-crc");
        seal(t);
        send_line(t.buf, t.len);
        return;
    }
    if (!can_run()) {
        /* Not executed and not cached, like a bad CRC: the host sends it again later. */
        text_str(t, "err 8 busy");
        seal(t);
        send_line(t.buf, t.len);
        return;
    }
    if (cache_valid && cache_seq == (uint16_t)seq) {
        /* A retransmission: the command already ran, send the same bytes again. */
        send_line(cache, cache_len);
        return;
    }
    line[star] = 0;
    char body[RIG_REPLY_MAX];
    Text b;
    text_init(b, body, sizeof body - 12); /* leave room for "#65535 " and "*XXXX" */
    commands_exec(line + i + 1, b);
    text_str(t, b.buf);
    seal(t);
    for (uint8_t k = 0; k <= t.len; k++)
        cache[k] = t.buf[k];
    cache_len = t.len;
    cache_seq = (uint16_t)seq;
    cache_valid = true;
    send_line(t.buf, t.len);
    commands_after_reply();
}

static void handle_line(void)
{
    last_activity = hw_millis();
    if (line_total > RIG_LINE_MAX) {
        send_plain("err 5 line-too-long");
        return;
    }
    if (line_bad) {
        send_plain("err 7 bad-frame");
        return;
    }
    if (line_len == 0)
        return; /* empty lines only count as activity */
    line[line_len] = 0;
    if (line[0] == '#') {
        handle_checked();
        return;
    }
    if (!can_run()) {
        send_plain("err 8 busy");
        return;
    }
    char buf[RIG_REPLY_MAX];
    Text t;
    text_init(t, buf, sizeof buf);
    commands_exec(line, t);
    send_line(t.buf, t.len);
    commands_after_reply();
}

static void store(uint8_t c)
{
    if (line_total < 0xFFFF)
        line_total++;
    if (c < 0x20 || c > 0x7E)
        line_bad = true;
    if (line_len < RIG_LINE_MAX)
        line[line_len++] = (char)c;
}

void proto_feed(uint8_t c)
{
    if (c == '\n') {
        cr_pending = false; /* "A CR before the LF is ignored." */
        handle_line();
        line_len = 0;
        line_total = 0;
        line_bad = false;
        line_lossy = false;
        return;
    }
    if (cr_pending) {
        cr_pending = false;
        store('\r'); /* a CR not followed by LF is an ordinary (bad) control byte */
    }
    if (c == '\r') {
        cr_pending = true;
        return;
    }
    store(c);
}

void proto_poll(void)
{
    for (uint8_t n = 0; n < 32; n++) {
        /* Read on only while any line this byte may end can be answered at once: at worst
         * with a short reply (busy, bad-crc, ...). Otherwise the bytes wait in the receive
         * buffer and the loop goes back to motion; nothing here ever waits for the UART. */
        if (hw_tx_room() < RIG_SHORT_REPLY_MAX)
            return;
        if (hw_rx_full())
            rx_lossy = true; /* bytes arriving from now on may be dropped */
        int16_t c = hw_read();
        if (c < 0)
            return;
        if (rx_lossy) {
            /* Lost bytes sit somewhere after what the buffer held: every line up to the
             * point where the buffer is read empty is answered busy, never executed. */
            line_lossy = true;
            if (!hw_rx_waiting())
                rx_lossy = false;
        }
        proto_feed((uint8_t)c);
    }
}
