/* SPDX-License-Identifier: MIT */
/*
 * test_registry.c - the model state machine (every transition, allowed or
 * not), lookup, the registry limit and the JSON a client sees.
 */
#include <stdlib.h>

#include "unit.h"

#include "mbrokerd.h"

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
	assert_int_equal(a->state, MODEL_UNINITIALIZED);
	assert_int_equal(a->ro_fd, -1);
	assert_int_equal(registry_count(), 2);
	assert_ptr_equal(registry_find("beta"), b);
	assert_null(registry_find("gamma"));
	registry_set_state(a, MODEL_LOADING);
	assert_int_equal(a->state, MODEL_LOADING);
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

static void
test_registry_model_json(void **state)
{
	struct model *m = registry_add("w");
	json_t *o;

	(void)state;
	m->provider = &provider_safetensors;
	m->size = 1234;
	m->checksum = 0xabcdef;
	m->generation = 7;
	m->state = MODEL_READY;
	o = registry_model_json(m);
	assert_string_equal(json_string_value(json_object_get(o, "name")), "w");
	assert_string_equal(json_string_value(json_object_get(o, "state")),
			    "READY");
	assert_string_equal(json_string_value(json_object_get(o, "format")),
			    "safetensors");
	assert_string_equal(json_string_value(json_object_get(o, "checksum")),
			    "0000000000abcdef");
	assert_int_equal(json_integer_value(json_object_get(o, "size")), 1234);
	assert_int_equal(json_integer_value(json_object_get(o, "generation")), 7);
	assert_null(json_object_get(o, "error"));
	json_decref(o);
	m->state = MODEL_ERROR;
	snprintf(m->error, sizeof m->error, "boom");
	o = registry_model_json(m);
	assert_string_equal(json_string_value(json_object_get(o, "error")),
			    "boom");
	assert_null(json_object_get(o, "checksum"));
	json_decref(o);
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
		cmocka_unit_test(test_registry_model_json),
		cmocka_unit_test(test_registry_provider_for_path),
	};

	log_init(LOG_LEVEL_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
