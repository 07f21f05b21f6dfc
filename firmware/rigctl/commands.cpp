/* The commands of PROTOCOL.md. Each validates everything before it changes anything. */
#include <string.h>
#include "app.h"
#include "config.h"
#include "hw.h"
#include "limits.h"
#include "motion.h"
#include "proto.h"
#include "text.h"

static void err(Text &out, const char *code_text)
{
    text_str(out, "err ");
    text_str(out, code_text);
}

static void bad_arg(Text &out) { err(out, "2 bad-argument"); }
static void bad_channel(Text &out) { err(out, "6 bad-channel"); }

/* Split on runs of spaces, in place, keeping the first RIG_MAX_TOKENS words. Sets *more when
 * there are further words: they only matter as an extra argument, found after every word
 * before them was checked (PROTOCOL.md: left to right, the first bad word decides). */
static uint8_t split(char *s, char *argv[RIG_MAX_TOKENS], bool *more)
{
    uint8_t n = 0;
    *more = false;
    while (*s) {
        while (*s == ' ')
            *s++ = 0;
        if (!*s)
            break;
        if (n == RIG_MAX_TOKENS) {
            *more = true;
            break;
        }
        argv[n++] = s;
        while (*s && *s != ' ')
            s++;
    }
    return n;
}

/* "<ch>:<value>": false on syntax errors, *ch may still be out of range. */
static bool parse_pair(char *tok, uint32_t max_value, uint32_t *ch, uint32_t *value)
{
    char *colon = strchr(tok, ':');
    if (!colon)
        return false;
    *colon = 0;
    return parse_u32(tok, 0xFFFFFFFFUL, ch) && parse_u32(colon + 1, max_value, value);
}

static void cmd_hello(Text &out)
{
    text_str(out, "ok rigctl fw=" RIG_FW_VERSION " proto=");
    text_u32(out, RIG_PROTO_VERSION);
    text_str(out, " servos=");
    text_u32(out, RIG_SERVOS);
    text_str(out, " lights=");
    text_u32(out, RIG_LIGHTS);
}

static void list(Text &out, const char *key, uint16_t (*get)(uint8_t), uint8_t n)
{
    text_str(out, key);
    for (uint8_t i = 0; i < n; i++) {
        if (i)
            text_char(out, ',');
        text_u32(out, get(i));
    }
}

static uint16_t light_of(uint8_t ch) { return g_app.light[ch]; }

static void cmd_status(Text &out)
{
    text_str(out, "ok ms=");
    text_u32(out, hw_millis());
    text_str(out, motion_moving() ? " moving=1" : " moving=0");
    list(out, " pos=", motion_pos_us, RIG_SERVOS);
    list(out, " target=", motion_target_us, RIG_SERVOS);
    list(out, " light=", light_of, RIG_LIGHTS);
    text_str(out, " timeout=");
    text_u32(out, g_app.timeout_ms);
    text_str(out, " flags=");
    text_hex(out, g_app.flags);
    text_str(out, " session=");
    text_u32(out, g_app.session);
}

static void cmd_move(uint8_t argc, char **argv, bool more, Text &out)
{
    uint32_t ms;
    if (argc < 2 || !parse_u32(argv[1], RIG_MOVE_MAX_MS, &ms))
        return bad_arg(out);
    uint32_t want[RIG_SERVOS];
    bool named[RIG_SERVOS] = {false};
    for (uint8_t i = 2; i < argc; i++) {
        uint32_t ch, us;
        if (!parse_pair(argv[i], 0xFFFFFFFFUL, &ch, &us))
            return bad_arg(out);
        if (ch >= RIG_SERVOS)
            return bad_channel(out);
        if (named[ch])
            return bad_arg(out); /* a channel named twice */
        named[ch] = true;
        want[ch] = us;
    }
    if (argc < 3 || more) /* no target at all, or a word past the last one checked */
        return bad_arg(out);
    /* All targets are checked before anything moves. */
    uint16_t target[RIG_SERVOS] = {0}; /* 0 = keep the current target */
    for (uint8_t ch = 0; ch < RIG_SERVOS; ch++) {
        if (!named[ch])
            continue;
        if (want[ch] < g_limits[ch].min || want[ch] > g_limits[ch].max) {
            err(out, "3 out-of-limits ch=");
            text_u32(out, ch);
            return;
        }
        target[ch] = (uint16_t)want[ch];
    }
    g_app.flags &= (uint8_t)~RIG_FLAG_SAFE;
    g_app.done_owed = false; /* a "!done" not yet sent belongs to the move this one replaces */
    text_str(out, "ok ");
    text_u32(out, motion_move(target, ms));
}

static void cmd_light(uint8_t argc, char **argv, bool more, Text &out)
{
    int16_t level[RIG_LIGHTS];
    for (uint8_t ch = 0; ch < RIG_LIGHTS; ch++)
        level[ch] = -1;
    for (uint8_t i = 1; i < argc; i++) {
        uint32_t ch, v;
        if (!parse_pair(argv[i], 255, &ch, &v))
            return bad_arg(out);
        if (ch >= RIG_LIGHTS)
            return bad_channel(out);
        if (level[ch] >= 0)
            return bad_arg(out);
        level[ch] = (int16_t)v;
    }
    if (argc < 2 || more)
        return bad_arg(out);
    for (uint8_t ch = 0; ch < RIG_LIGHTS; ch++)
        if (level[ch] >= 0)
            app_set_light(ch, (uint8_t)level[ch]);
    g_app.flags &= (uint8_t)~RIG_FLAG_SAFE;
    text_str(out, "ok");
}

static void cmd_park(uint8_t argc, Text &out)
{
    if (argc != 1)
        return bad_arg(out);
    for (uint8_t ch = 0; ch < RIG_LIGHTS; ch++)
        app_set_light(ch, 0);
    g_app.flags &= (uint8_t)~RIG_FLAG_SAFE;
    g_app.done_owed = false; /* a "!done" not yet sent belongs to the move this one replaces */
    text_str(out, "ok ");
    text_u32(out, motion_park());
}

static void cmd_limit(uint8_t argc, char **argv, bool more, Text &out)
{
    uint32_t ch;
    if (argc < 2 || !parse_u32(argv[1], 0xFFFFFFFFUL, &ch))
        return bad_arg(out);
    if (ch >= RIG_SERVOS)
        return bad_channel(out); /* the channel is checked before the number of words */
    if ((argc != 2 && argc != 6) || more)
        return bad_arg(out);
    if (argc == 2) {
        const ServoLimits &l = g_limits[ch];
        text_str(out, "ok ch=");
        text_u32(out, ch);
        text_str(out, " min=");
        text_u32(out, l.min);
        text_str(out, " max=");
        text_u32(out, l.max);
        text_str(out, " park=");
        text_u32(out, l.park);
        text_str(out, " slew=");
        text_u32(out, l.slew);
        return;
    }
    uint32_t v[4];
    for (uint8_t i = 0; i < 4; i++)
        if (!parse_u32(argv[2 + i], 65535, &v[i]))
            return bad_arg(out);
    ServoLimits l = {(uint16_t)v[0], (uint16_t)v[1], (uint16_t)v[2], (uint16_t)v[3]};
    if (!limits_valid(l))
        return bad_arg(out);
    limits_store((uint8_t)ch, l);
    motion_limits_changed((uint8_t)ch);
    text_str(out, "ok");
}

/* The host's token for "the state I configured": any reset puts it back to 0. */
static void cmd_session(uint8_t argc, char **argv, Text &out)
{
    uint32_t n;
    if (argc != 2 || !parse_u32(argv[1], 65535, &n))
        return bad_arg(out);
    g_app.session = (uint16_t)n;
    text_str(out, "ok");
}

static void cmd_timeout(uint8_t argc, char **argv, Text &out)
{
    uint32_t ms;
    if (argc != 2 || !parse_u32(argv[1], RIG_TIMEOUT_MAX_MS, &ms))
        return bad_arg(out);
    g_app.timeout_ms = ms;
    text_str(out, "ok");
}

void commands_exec(char *cmd, Text &out)
{
    char *argv[RIG_MAX_TOKENS];
    bool more;
    uint8_t argc = split(cmd, argv, &more);
    if (argc == 0) /* a line of spaces */
        return err(out, "1 unknown-command");
    const char *c = argv[0];
    bool known = !strcmp(c, "hello") || !strcmp(c, "status") || !strcmp(c, "move") ||
                 !strcmp(c, "light") || !strcmp(c, "park") || !strcmp(c, "limit") ||
                 !strcmp(c, "timeout") || !strcmp(c, "reset") || !strcmp(c, "session");
    if (!known)
        return err(out, "1 unknown-command");
    if (!strcmp(c, "hello"))
        return argc == 1 ? cmd_hello(out) : bad_arg(out);
    if (!strcmp(c, "status"))
        return argc == 1 ? cmd_status(out) : bad_arg(out);
    if (!strcmp(c, "move"))
        return cmd_move(argc, argv, more, out);
    if (!strcmp(c, "light"))
        return cmd_light(argc, argv, more, out);
    if (!strcmp(c, "park"))
        return cmd_park(argc, out);
    if (!strcmp(c, "limit"))
        return cmd_limit(argc, argv, more, out);
    if (!strcmp(c, "timeout"))
        return cmd_timeout(argc, argv, out);
    if (!strcmp(c, "session"))
        return cmd_session(argc, argv, out);
    /* reset */
    if (argc != 1)
        return bad_arg(out);
    g_app.reset_pending = true;
    text_str(out, "ok");
}

void commands_after_reply(void)
{
    if (g_app.reset_pending)
        hw_reset();
}
