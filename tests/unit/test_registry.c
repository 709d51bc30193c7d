/* SPDX-License-Identifier: MIT */
/*
 * test_registry.c - the model state machine (every transition, allowed or
 * not), lookup, the registry limit, generations (a loaded one becomes
 * current, the one it replaces drains) and the JSON a client sees.
 */
#include <stdlib.h>

#include "unit.h"

#include "mbrokerd.h"

#include "broker_fixture.h"
#include "lease.h"

static void
test_registry_transitions(void **state)
{
	/* allowed[from][to], in enum order: UNINITIALIZED, LOADING, READY,
	 * UNLOADING, ERROR. */
	static const bool allowed[5][5] = {
		{0, 1, 0, 0, 0},
		{0, 0, 1, 1, 1},
		{0, 0, 0, 1, 0},
		{1, 0, 0, 0, 1},
		{0, 1, 0, 1, 0},
	};

	(void)state;
	for (int from = 0; from < 5; from++)
		for (int to = 0; to < 5; to++)
			if (registry_transition_valid(from, to) != allowed[from][to])
				fail_msg("%s -> %s should be %s",
					 registry_state_name(from),
					 registry_state_name(to),
					 allowed[from][to] ? "allowed" : "refused");
}

static void
test_registry_state_names(void **state)
{
	(void)state;
	assert_string_equal(registry_state_name(MODEL_UNINITIALIZED),
			    "UNINITIALIZED");
	assert_string_equal(registry_state_name(MODEL_READY), "READY");
	assert_string_equal(registry_state_name(MODEL_ERROR), "ERROR");
	assert_string_equal(registry_state_name((enum model_state)42), "?");
}

static void
test_registry_add_find_remove(void **state)
{
	struct model *a, *b;

	(void)state;
	a = registry_add("alpha");
	b = registry_add("beta");
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(model_state(a), MODEL_UNINITIALIZED);
	assert_string_equal(model_name(a), "alpha");
	assert_null(model_current(a));
	assert_null(model_generations(a, NULL));
	assert_int_equal(registry_count(), 2);
	assert_ptr_equal(registry_find("beta"), b);
	assert_null(registry_find("gamma"));
	registry_set_state(a, MODEL_LOADING);
	assert_int_equal(model_state(a), MODEL_LOADING);
	assert_ptr_equal(registry_next(NULL), a);
	assert_ptr_equal(registry_next(a), b);
	assert_null(registry_next(b));
	registry_remove(a);
	registry_remove(b);
	assert_int_equal(registry_count(), 0);
	assert_null(registry_find("alpha"));
}

static void
test_registry_full(void **state)
{
	char name[16];

	(void)state;
	for (int i = 0; i < BROKER_MAX_MODELS; i++) {
		snprintf(name, sizeof name, "m%d", i);
		assert_non_null(registry_add(name));
	}
	assert_null(registry_add("one-too-many"));
	assert_int_equal(registry_count(), BROKER_MAX_MODELS);
	registry_clear();
	assert_int_equal(registry_count(), 0);
}

/* A loaded generation of m with its checksum. */
static struct generation *
loaded_generation(struct model *m, const struct provider *p, uint64_t size,
		  uint64_t checksum)
{
	struct generation *g =
		broker_fixture_loaded_generation(m, "/models/w", p, size);

	g->checksum = checksum;
	return g;
}

static void
test_registry_generation_promote(void **state)
{
	struct model *m = registry_add("w");
	struct generation *first, *second;

	(void)state;
	registry_set_state(m, MODEL_LOADING);
	first = loaded_generation(m, &provider_raw, 10, 1);
	assert_int_equal(first->role, GENERATION_NEXT);
	assert_ptr_equal(model_next_generation(m), first);
	assert_null(model_current(m));
	/* The first load replaces nothing. */
	assert_null(registry_generation_promote(m));
	assert_int_equal(first->role, GENERATION_CURRENT);
	assert_ptr_equal(model_current(m), first);
	assert_null(model_next_generation(m));
	registry_set_state(m, MODEL_READY);
	/* A replace: the new one serves, the old one drains. */
	second = loaded_generation(m, &provider_raw, 20, 2);
	assert_true(second->number > first->number);
	assert_ptr_equal(model_current(m), first);
	assert_ptr_equal(registry_generation_promote(m), first);
	assert_int_equal(first->role, GENERATION_DRAINING);
	assert_ptr_equal(model_current(m), second);
	assert_int_equal(model_state(m), MODEL_READY);
	/* Newest first, and the leases of every generation count. */
	assert_ptr_equal(model_generations(m, NULL), second);
	assert_ptr_equal(model_generations(m, second), first);
	assert_null(model_generations(m, first));
	registry_generation_leased(first, 1);
	registry_generation_leased(second, 1);
	registry_generation_leased(second, 1);
	assert_int_equal(model_leases(m), 3);
	registry_generation_leased(first, -1);
	registry_generation_leased(second, -1);
	registry_generation_leased(second, -1);
	assert_int_equal(model_leases(m), 0);
	broker_fixture_drop_generations(m);
	registry_clear();
}

static void
test_registry_model_json(void **state)
{
	struct model *m = registry_add("w");
	struct generation *g;
	json_t *o;

	(void)state;
	registry_set_state(m, MODEL_LOADING);
	g = loaded_generation(m, &provider_safetensors, 1234, 0xabcdef);
	registry_generation_promote(m);
	registry_set_state(m, MODEL_READY);
	o = registry_model_json(m);
	assert_string_equal(json_string_value(json_object_get(o, "name")), "w");
	assert_string_equal(json_string_value(json_object_get(o, "state")),
			    "READY");
	assert_string_equal(json_string_value(json_object_get(o, "format")),
			    "safetensors");
	assert_string_equal(json_string_value(json_object_get(o, "checksum")),
			    "0000000000abcdef");
	assert_int_equal(json_integer_value(json_object_get(o, "size")), 1234);
	assert_int_equal(json_integer_value(json_object_get(o, "generation")),
			 g->number);
	assert_string_equal(json_string_value(json_object_get(o, "segment")),
			    segment_name(g->members[0].segment));
	assert_int_equal(json_array_size(json_object_get(o, "generations")), 1);
	assert_null(json_object_get(o, "error"));
	assert_null(json_object_get(o, "pids"));
	assert_null(json_object_get(o, "members"));
	json_decref(o);
	broker_fixture_drop_generations(m);
	registry_set_state(m, MODEL_UNLOADING);
	registry_set_state(m, MODEL_ERROR);
	model_set_error(m, "boom %d", 42);
	assert_string_equal(model_error(m), "boom 42");
	o = lease_model_json(m);
	assert_string_equal(json_string_value(json_object_get(o, "error")),
			    "boom 42");
	assert_null(json_object_get(o, "checksum"));
	assert_int_equal(json_array_size(json_object_get(o, "pids")), 0);
	assert_int_equal(json_array_size(json_object_get(o, "generations")), 0);
	json_decref(o);
	registry_clear();
}

/* A bundle: format "bundle", its file count in "members", its size the
 * sum of its files', the segment its first member's. */
static void
test_registry_bundle_json(void **state)
{
	struct model *m = registry_add("b");
	struct generation *g;
	json_t *o;

	(void)state;
	registry_set_state(m, MODEL_LOADING);
	g = broker_fixture_loaded_bundle(m, "/models/b", 3, 1000);
	registry_generation_promote(m);
	registry_set_state(m, MODEL_READY);
	o = registry_model_json(m);
	assert_string_equal(json_string_value(json_object_get(o, "format")),
			    "bundle");
	assert_int_equal(json_integer_value(json_object_get(o, "members")), 3);
	assert_int_equal(json_integer_value(json_object_get(o, "size")), 3000);
	assert_string_equal(json_string_value(json_object_get(o, "segment")),
			    segment_name(g->members[0].segment));
	json_decref(o);
	broker_fixture_drop_generations(m);
	assert_int_equal(unit_shm_count(broker.cfg.instance), 0);
	registry_clear();
}

/* "generations" lists each generation newest first, with its role; the
 * model's own fields are the current generation's. */
static void
test_registry_model_json_generations(void **state)
{
	struct model *m = registry_add("w");
	struct generation *old, *cur, *next;
	const json_t *gens, *o0, *o1, *o2;
	json_t *o;

	(void)state;
	registry_set_state(m, MODEL_LOADING);
	old = loaded_generation(m, &provider_raw, 100, 0x1);
	registry_generation_promote(m);
	registry_set_state(m, MODEL_READY);
	cur = loaded_generation(m, &provider_raw, 200, 0x2);
	registry_generation_promote(m);
	old->drain_deadline_ms = clock_monotonic_ms() + 60000;
	next = registry_generation_new(m, &provider_raw, "/models/w2");
	assert_non_null(next);
	o = lease_model_json(m);
	assert_int_equal(json_integer_value(json_object_get(o, "generation")),
			 cur->number);
	assert_int_equal(json_integer_value(json_object_get(o, "size")), 200);
	assert_string_equal(json_string_value(json_object_get(o, "checksum")),
			    "0000000000000002");
	gens = json_object_get(o, "generations");
	assert_int_equal(json_array_size(gens), 3);
	o0 = json_array_get(gens, 0);
	o1 = json_array_get(gens, 1);
	o2 = json_array_get(gens, 2);
	assert_int_equal(json_integer_value(json_object_get(o0, "generation")),
			 next->number);
	assert_string_equal(json_string_value(json_object_get(o0, "role")),
			    "next");
	assert_string_equal(json_string_value(json_object_get(o0, "path")),
			    "/models/w2");
	assert_null(json_object_get(o0, "checksum"));
	assert_int_equal(json_integer_value(json_object_get(o1, "generation")),
			 cur->number);
	assert_string_equal(json_string_value(json_object_get(o1, "role")),
			    "current");
	assert_null(json_object_get(o1, "drain_deadline_ms"));
	assert_int_equal(json_integer_value(json_object_get(o2, "generation")),
			 old->number);
	assert_string_equal(json_string_value(json_object_get(o2, "role")),
			    "draining");
	assert_string_equal(json_string_value(json_object_get(o2, "checksum")),
			    "0000000000000001");
	assert_in_range(json_integer_value(json_object_get(o2,
							  "drain_deadline_ms")),
			1, 60000);
	assert_null(json_object_get(o2, "state"));
	assert_int_equal(json_array_size(json_object_get(o2, "pids")), 0);
	json_decref(o);
	/* A drain that timed out is shown as ERROR; the model serves on. */
	old->abandoned = true;
	o = registry_model_json(m);
	gens = json_object_get(o, "generations");
	assert_string_equal(json_string_value(json_object_get(
				    json_array_get(gens, 2), "state")),
			    "ERROR");
	assert_string_equal(json_string_value(json_object_get(o, "state")),
			    "READY");
	json_decref(o);
	broker_fixture_drop_generations(m);
	registry_clear();
}

static void
test_registry_provider_for_path(void **state)
{
	(void)state;
	assert_ptr_equal(provider_for_path("/m/x.safetensors"),
			 &provider_safetensors);
	assert_ptr_equal(provider_for_path("/m/x.bin"), &provider_raw);
	assert_ptr_equal(provider_for_path("/m/.safetensors"),
			 &provider_safetensors);
	assert_ptr_equal(provider_for_path("safetensors"), &provider_raw);
	assert_ptr_equal(provider_find("raw"), &provider_raw);
	assert_null(provider_find("gguf"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_registry_transitions),
		cmocka_unit_test(test_registry_state_names),
		cmocka_unit_test(test_registry_add_find_remove),
		cmocka_unit_test(test_registry_full),
		cmocka_unit_test(test_registry_generation_promote),
		cmocka_unit_test(test_registry_model_json),
		cmocka_unit_test(test_registry_bundle_json),
		cmocka_unit_test(test_registry_model_json_generations),
		cmocka_unit_test(test_registry_provider_for_path),
	};

	return cmocka_run_group_tests(tests, broker_fixture_group_setup,
				      broker_fixture_group_teardown);
}
