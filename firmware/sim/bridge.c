#define _GNU_SOURCE
#include "bridge.h"

#include <errno.h>
#include <fcntl.h>
#include <pty.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <avr_uart.h>
#include <sim_io.h>

static void flush_out(bridge_t *b)
{
    while (b->out_len) {
        ssize_t n = write(b->master, b->out, b->out_len);
        if (n <= 0)
            return; /* pty full (nobody reading): keep the bytes for later */
        memmove(b->out, b->out + n, b->out_len - (size_t)n);
        b->out_len -= (size_t)n;
    }
}

static void on_output(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    bridge_t *b = param;
    if (b->out_len < sizeof b->out)
        b->out[b->out_len++] = (unsigned char)value;
    /* else: the host has not read 64 KB; drop like a real USB-serial chip would */
    if (value == '\n' || b->out_len >= 256)
        flush_out(b);
}

static void feed(bridge_t *b)
{
    /* XOFF arrives synchronously from inside avr_raise_irq when the FIFO fills. */
    while (b->room && b->in_len) {
        unsigned char c = b->in[b->in_head];
        b->in_head = (b->in_head + 1) % sizeof b->in;
        b->in_len--;
        avr_raise_irq(b->uart_in, c);
    }
}

static void on_xon(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    (void)value;
    bridge_t *b = param;
    b->room = 1;
    feed(b);
}

static void on_xoff(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    (void)value;
    ((bridge_t *)param)->room = 0;
}

static void make_raw(int fd)
{
    struct termios t;
    if (tcgetattr(fd, &t) == 0) {
        cfmakeraw(&t);
        tcsetattr(fd, TCSANOW, &t);
    }
}

int bridge_init(bridge_t *b, avr_t *avr)
{
    memset(b, 0, sizeof *b);
    b->avr = avr;
    if (openpty(&b->master, &b->slave, b->slave_name, NULL, NULL) != 0)
        return -1;
    make_raw(b->master);
    make_raw(b->slave);
    fcntl(b->master, F_SETFL, fcntl(b->master, F_GETFL) | O_NONBLOCK);

    /* Firmware output must not be echoed on our stdout (the handshake line). */
    uint32_t flags = 0;
    avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS('0'), &flags);
    flags &= ~AVR_UART_FLAG_STDIO;
    avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);

    b->uart_in = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_INPUT);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT),
                            on_output, b);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XON),
                            on_xon, b);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XOFF),
                            on_xoff, b);
    b->room = 1; /* the FIFO starts empty */
    return 0;
}

void bridge_poll(bridge_t *b)
{
    flush_out(b);
    /* Read only what fits; the rest waits in the pty, which back-pressures the host. */
    while (b->in_len < sizeof b->in) {
        size_t tail = (b->in_head + b->in_len) % sizeof b->in;
        size_t space = sizeof b->in - b->in_len;
        if (tail + space > sizeof b->in)
            space = sizeof b->in - tail;
        ssize_t n = read(b->master, b->in + tail, space);
        if (n <= 0)
            break; /* EAGAIN, or EIO while no host has the slave open */
        b->in_len += (size_t)n;
    }
    feed(b);
}

void bridge_close(bridge_t *b)
{
    flush_out(b);
    close(b->master);
    close(b->slave);
}
