/* herd-keygen: makes a CURVE key pair per server for authenticated links.
 *
 *   herd-keygen DIR NAME...
 *
 * Writes DIR/NAME.key (public) and DIR/NAME.key_secret (both keys, mode
 * 0600) for each NAME, and prints "NAME PUBLIC_KEY" lines for the topology's
 * public_key fields. An existing key is kept and printed, never overwritten. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <czmq.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: herd-keygen DIR NAME...\n");
        return 2;
    }
    const char *dir = argv[1];
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "herd-keygen: cannot make %s: %s\n", dir, strerror(errno));
        return 1;
    }
    for (int i = 2; i < argc; i++) {
        char path[4096], secret[4200];
        snprintf(path, sizeof path, "%s/%s.key", dir, argv[i]);
        snprintf(secret, sizeof secret, "%s_secret", path);
        zcert_t *cert = NULL;
        if (access(secret, R_OK) == 0) {
            cert = zcert_load(path);
        } else {
            cert = zcert_new();
            if (cert) {
                zcert_set_meta(cert, "name", "%s", argv[i]);
                mode_t old = umask(077);
                int rc = zcert_save(cert, path);
                umask(old);
                if (rc != 0) {
                    fprintf(stderr, "herd-keygen: cannot write %s: %s\n", path, strerror(errno));
                    zcert_destroy(&cert);
                    return 1;
                }
                chmod(secret, 0600);
                chmod(path, 0644);
            }
        }
        if (!cert) {
            fprintf(stderr, "herd-keygen: cannot read or make the key of %s\n", argv[i]);
            return 1;
        }
        printf("%s %s\n", argv[i], zcert_public_txt(cert));
        zcert_destroy(&cert);
    }
    return 0;
}
