/* Actual state: units read back from the engine by the scrapr.owner label
 * (the drivers' list()), never from memory alone, so a restarted or newly
 * elected orchestrator sees exactly what exists. This file turns labels into
 * unit fields; pure, any thread. */
#include <stdlib.h>
#include <string.h>

#include "orchestrator.h"
#include "shared/xalloc.h"

static char *label_dup(const json_t *labels, const char *key)
{
    const char *v = json_string_value(json_object_get(labels, key));

    return v ? sh_xstrdup(v) : NULL;
}

static long label_long(const json_t *labels, const char *key)
{
    const char *v = json_string_value(json_object_get(labels, key));
    char *end;
    long n;

    if (!v)
        return 0;
    n = strtol(v, &end, 10);
    return *end ? 0 : n;
}

void orch_unit_from_labels(struct orch_unit *a, const char *name, const json_t *labels)
{
    const char *role = json_string_value(json_object_get(labels, ORCH_LABEL_ROLE));

    a->name = sh_xstrdup(name[0] == '/' ? name + 1 : name);
    a->config_id = label_dup(labels, ORCH_LABEL_CONFIG_ID);
    a->type = label_dup(labels, ORCH_LABEL_TYPE);
    a->collection = label_dup(labels, ORCH_LABEL_COLLECTION);
    a->config_hash = label_dup(labels, ORCH_LABEL_CONFIG_HASH);
    a->spec_hash = label_dup(labels, ORCH_LABEL_SPEC_HASH);
    a->version = label_long(labels, ORCH_LABEL_VERSION);
    a->replica = (int)label_long(labels, ORCH_LABEL_REPLICA);
    a->role = role && strcmp(role, "redis") == 0 ? ORCH_ROLE_REDIS : ORCH_ROLE_APP;
    a->spare = json_string_value(json_object_get(labels, ORCH_LABEL_SPARE)) != NULL;
    if (!a->type)
        a->type = sh_xstrdup("unknown");
    if (!a->config_id)
        a->config_id = sh_xstrdup("");
}

json_t *orch_owner_filter(const struct orch_config *cfg)
{
    char *l = sh_xasprintf("%s=%s", ORCH_LABEL_OWNER, cfg->owner);
    json_t *f = json_pack("{s:[s]}", "label", l);

    free(l);
    return f;
}
