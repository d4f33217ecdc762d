/* herd_links_auth: CURVE on the links between servers. See herd_links.h.
 *
 * Which keys are let in is decided by the peer port's guard
 * (herd_links_guard.c): only our neighbours' keys, and the user id bound to
 * the connection is the neighbour's name, checked against every message. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "herd_links_int.h"

/* Authenticated links: loads our key pair from keys_dir/NAME.key_secret and
 * checks it against the topology. Returns 0 or -1 (err). */
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
    return 0;
}

void herd_links_auth_router(herd_links_t *links, void *router)
{
    int one = 1;
    zmq_setsockopt(router, ZMQ_CURVE_SERVER, &one, sizeof one);
    zmq_setsockopt(router, ZMQ_CURVE_SECRETKEY, zcert_secret_key(links->cert), 32);
    /* A connection whose ZAP reply names a user starts with a credential
     * message that libzmq counts as queued but never as read: it holds one
     * place of the receive queue for good, so a keyed link needs two for
     * one message to pass. */
    int two = 2;
    zmq_setsockopt(router, ZMQ_RCVHWM, &two, sizeof two);
}

int herd_links_auth_dealer(herd_links_t *links, neighbour_t *nb, const char *name, const char *public_key,
                           char *err, size_t errlen)
{
    if (!links->cert && !links->eph && !(links->eph = zcert_new())) {
        snprintf(err, errlen, "cannot make a key pair for the link to %s", name);
        return -1;
    }
    zcert_t *mine = links->cert ? links->cert : links->eph;
    uint8_t bin[32];
    if (!public_key || strlen(public_key) != 40 || !zmq_z85_decode(bin, public_key)) {
        snprintf(err, errlen, "links are authenticated but %s has no valid public_key in the topology", name);
        return -1;
    }
    memcpy(nb->key_bin, bin, sizeof bin);
    if (nb->key != public_key)
        snprintf(nb->key, sizeof nb->key, "%s", public_key);
    zmq_setsockopt(nb->dealer, ZMQ_CURVE_SERVERKEY, nb->key, 41);
    zmq_setsockopt(nb->dealer, ZMQ_CURVE_PUBLICKEY, zcert_public_key(mine), 32);
    zmq_setsockopt(nb->dealer, ZMQ_CURVE_SECRETKEY, zcert_secret_key(mine), 32);
    return 0;
}

int herd_links_auth_rekey(herd_links_t *links, const herd_topology_t *topo, const herd_server_conf_t *me,
                          char *err, size_t errlen)
{
    if (!links->cert) {
        if (herd_links_auth_setup(links, topo, me, err, errlen) == 0)
            return 0;
        zcert_destroy(&links->cert);
        return -1;
    }
    zcert_t *old = links->cert;
    links->cert = NULL;
    if (herd_links_auth_setup(links, topo, me, err, errlen) != 0) {
        zcert_destroy(&links->cert);
        links->cert = old;
        return -1;
    }
    zcert_destroy(&old);
    /* A bound socket's listener keeps the options it was bound with: the
     * ROUTER takes the new secret key with a new bind. */
    zmq_setsockopt(links->router, ZMQ_CURVE_SECRETKEY, zcert_secret_key(links->cert), 32);
    return 0;
}

bool herd_links_auth_matches(herd_links_t *links, zmq_msg_t *msg, const neighbour_t *nb)
{
    const char *uid = zmq_msg_gets(msg, "User-Id");
    if (nb->key[0])
        return uid && !strcmp(uid, nb->name);
    return links->rollout && (!uid || !*uid);
}

int herd_links_auth_reconfigure(herd_links_t *links, const herd_topology_t *topo, const herd_server_conf_t *me,
                                char *err, size_t errlen)
{
    if (!me->public_key && !links->cert)
        return 0;
    if (me->public_key && links->cert && !strcmp(me->public_key, zcert_public_txt(links->cert)))
        return 0;
    if (!me->public_key) {
        /* Back to plain links (a roll-out undone). */
        int zero = 0, one = 1;
        zmq_setsockopt(links->router, ZMQ_CURVE_SERVER, &zero, sizeof zero);
        zmq_setsockopt(links->router, ZMQ_RCVHWM, &one, sizeof one); /* no credential messages any more */
        zcert_destroy(&links->cert);
        herd_log_event(links->log, "links are NOT authenticated any more: the topology gives %s no public_key",
                       me->name);
    } else {
        bool was_plain = !links->cert;
        if (herd_links_auth_rekey(links, topo, me, err, errlen) != 0)
            return -1;
        if (was_plain)
            herd_links_auth_router(links, links->router);
        zcert_destroy(&links->eph);
        herd_log_event(links->log, "%s", was_plain ? "links are authenticated (CURVE) from now on: our key pair was read"
                                                   : "links: our key pair was read again (a new public_key): every "
                                                     "link is made anew with it");
    }
    links_rebind(links, herd_loop_now_ms(links->loop), "our key pair changed");
    return 1;
}

void herd_links_auth_close(herd_links_t *links)
{
    zcert_destroy(&links->cert);
    zcert_destroy(&links->eph);
}
