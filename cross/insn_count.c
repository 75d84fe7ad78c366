/*
 * insn_count.c: a QEMU TCG plugin that counts the guest instructions a program executes, for a
 * repeatable measure of work per crop under qemu-user (wall time under emulation says little).
 *
 *   gcc -shared -fPIC -O2 -o insn_count.so cross/insn_count.c
 *   qemu-aarch64 -plugin ./insn_count.so -d plugin -D out.txt BINARY ARGS
 *
 * Prints "insns: N" through QEMU's plugin log when the program exits. Needs the dynamically linked
 * qemu-user (Debian package qemu-user; qemu-user-static cannot load plugins).
 *
 * The few declarations below are the stable QEMU plugin API (version 1, QEMU 4.2 to 8.x), written
 * out so that no QEMU source tree is needed to build the plugin.
 */
#include <stdint.h>
#include <stdio.h>
#include <stddef.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS };
typedef void (*tb_trans_cb)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*vcpu_udata_cb)(unsigned int vcpu_index, void *userdata);
typedef void (*udata_cb)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, vcpu_udata_cb cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb cb, void *userdata);
void qemu_plugin_outs(const char *string);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

static uint64_t executed;

/* Runs before each executed translation block; the block's length is its user data. Atomic, since
 * every guest thread is a vCPU of its own. */
static void block_executed(unsigned int vcpu_index, void *insns)
{
    (void)vcpu_index;
    __atomic_fetch_add(&executed, (uint64_t)(uintptr_t)insns, __ATOMIC_RELAXED);
}

static void block_translated(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    uintptr_t n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_cb(tb, block_executed, QEMU_PLUGIN_CB_NO_REGS, (void *)n);
}

static void program_exited(qemu_plugin_id_t id, void *unused)
{
    (void)id;
    (void)unused;
    char line[64];
    snprintf(line, sizeof line, "insns: %llu\n",
             (unsigned long long)__atomic_load_n(&executed, __ATOMIC_RELAXED));
    qemu_plugin_outs(line);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                               const void *info, int argc,
                                                               char **argv)
{
    (void)info;
    (void)argc;
    (void)argv;
    qemu_plugin_register_vcpu_tb_trans_cb(id, block_translated);
    qemu_plugin_register_atexit_cb(id, program_exited, NULL);
    return 0;
}
