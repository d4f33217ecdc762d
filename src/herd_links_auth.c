/* herd_links_auth: CURVE on the links between servers. See herd_links.h.
 *
 * ZAP (ZeroMQ RFC 27): libzmq asks us about each CURVE handshake on our
 * ROUTER. Only our neighbours' keys are let in, and the user id bound to the
 * connection is the neighbour's name, checked against every message. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "herd_links_int.h"

/* Answers each ZAP request: version, request id, domain, address, routing id,
 * mechanism, key -> version, request id, status, text, user id, metadata. */
static void zap_ready(herd_loop_t *loop, void *arg)
{
    (void)loop;
    herd_links_t *links = arg;
    for (;;) {
        zmq_msg_t f[8];
        size_t n = 0;
        bool more = true;
        while (more) {
            zmq_msg_t part;
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, links->zap, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&part);
                if (n == 0)
                    return;
                break;
            }
            more = zmq_msg_more(&part);
            if (n < 8)
                f[n++] = part;
            else
                zmq_msg_close(&part);
        }
        /* version, request id, domain, address, routing id, mechanism, key */
        const char *status = "400", *text = "unknown key", *user = "";
        char address[64] = "?";
        if (n >= 4)
            snprintf(address, sizeof address, "%.*s", (int)zmq_msg_size(&f[3]), (char *)zmq_msg_data(&f[3]));
        if (n == 7 && zmq_msg_size(&f[5]) == 5 && !memcmp(zmq_msg_data(&f[5]), "CURVE", 5) &&
            zmq_msg_size(&f[6]) == 32) {
            for (size_t i = 0; i < links->n_nb; i++) {
                if (!memcmp(links->nb[i]->key_bin, zmq_msg_data(&f[6]), 32)) {
                    status = "200", text = "OK", user = links->nb[i]->name;
                    break;
                }
            }
        }
        if (*status != '2') {
            links->rejected++;
            herd_log_event(links->log, "peer: refused a link from %s: its key is not a neighbour's", address);
        }
        const char *id = n >= 2 ? zmq_msg_data(&f[1]) : "";
        size_t id_len = n >= 2 ? zmq_msg_size(&f[1]) : 0;
        zmq_send(links->zap, "1.0", 3, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(links->zap, id, id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(links->zap, status, 3, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(links->zap, text, strlen(text), ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(links->zap, user, strlen(user), ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(links->zap, "", 0, ZMQ_DONTWAIT);
        for (size_t i = 0; i < n; i++)
            zmq_msg_close(&f[i]);
    }
}

/* Authenticated links: loads our key pair from keys_dir/NAME.key_secret and
 * checks it against the topology; answers ZAP. Returns 0 or -1 (err). */
int herd_links_auth_setup(herd_links_t *links, const herd_topology_t *topo, const herd_server_conf_t *me,
                          char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.key", topo->keys_dir, me->name);
    links->cert = zcert_load(path);
    if (!links->cert) {
        snprintf(err, errlen, "links are authenticated (%s has a public_key) but %s_secret cannot be read",
                 me->name, path);
        return -1;
    }
    static const uint8_t zero[32];
    if (!memcmp(zcert_secret_key(links->cert), zero, 32)) {
        snprintf(err, errlen, "%s_secret holds no secret key", path);
        return -1;
    }
    if (strcmp(zcert_public_txt(links->cert), me->public_key) != 0) {
        snprintf(err, errlen, "the key in %s_secret is not the public_key of %s in %s", path, me->name, topo->path);
        return -1;
    }
    links->zap = zmq_socket(zsys_init(), ZMQ_REP);
    if (!links->zap || zmq_bind(links->zap, "inproc://zeromq.zap.01") != 0 ||
        herd_loop_add_zmq(links->loop, links->zap, zap_ready, links) != 0) {
        snprintf(err, errlen, "cannot start the link authentication handler: %s", zmq_strerror(errno));
        return -1;
    }
    return 0;
}

void herd_links_auth_router(herd_links_t *links, void *router)
{
    int one = 1;
    zmq_setsockopt(router, ZMQ_CURVE_SERVER, &one, sizeof one);
    zmq_setsockopt(router, ZMQ_CURVE_SECRETKEY, zcert_secret_key(links->cert), 32);
    zmq_setsockopt(router, ZMQ_ZAP_DOMAIN, "herd", 4);
}

int herd_links_auth_dealer(herd_links_t *links, neighbour_t *nb, const char *name, const char *public_key,
                           char *err, size_t errlen)
{
    uint8_t bin[32];
    if (!public_key || strlen(public_key) != 40 || !zmq_z85_decode(bin, public_key)) {
        snprintf(err, errlen, "links are authenticated but %s has no valid public_key in the topology", name);
        return -1;
    }
    memcpy(nb->key_bin, bin, sizeof bin);
    if (nb->key != public_key)
        snprintf(nb->key, sizeof nb->key, "%s", public_key);
    zmq_setsockopt(nb->dealer, ZMQ_CURVE_SERVERKEY, nb->key, 41);
    zmq_setsockopt(nb->dealer, ZMQ_CURVE_PUBLICKEY, zcert_public_key(links->cert), 32);
    zmq_setsockopt(nb->dealer, ZMQ_CURVE_SECRETKEY, zcert_secret_key(links->cert), 32);
    return 0;
}

bool herd_links_auth_matches(zmq_msg_t *msg, const char *name)
{
    const char *uid = zmq_msg_gets(msg, "User-Id");
    return uid && !strcmp(uid, name);
}

void herd_links_auth_close(herd_links_t *links)
{
    if (links->zap) {
        herd_loop_remove_zmq(links->loop, links->zap);
        zmq_close(links->zap);
        links->zap = NULL;
    }
    zcert_destroy(&links->cert);
}
