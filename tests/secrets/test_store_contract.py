"""SecretStore contract: SQLite, PostgreSQL and the in-memory fake behave alike."""

from mist.secrets.model import StoredSecret


def test_secrets_are_set_replaced_and_removed_in_one_change_per_function(secret_store):
    secret_store.change_secrets("hello", {"B_TOKEN": "v1.b", "A_KEY": "v1.a"}, (), 1.0)
    secret_store.change_secrets("acme/hello", {"A_KEY": "v1.other"}, (), 2.0)
    assert secret_store.list_secrets("hello") == [StoredSecret("hello", "A_KEY", "v1.a", 1.0),
                                                  StoredSecret("hello", "B_TOKEN", "v1.b", 1.0)]
    secret_store.change_secrets("hello", {"A_KEY": "v1.a2"}, ("B_TOKEN",), 3.0)
    assert secret_store.list_secrets("hello") == [StoredSecret("hello", "A_KEY", "v1.a2", 3.0)]
    assert [(s.function, s.name) for s in secret_store.list_secrets()] == [("acme/hello", "A_KEY"),
                                                                           ("hello", "A_KEY")]


def test_names_are_case_sensitive_and_listed_in_code_point_order(secret_store):
    secret_store.change_secrets("f", {"b": "1", "B": "2", "_a": "3", "a_b": "4", "aB": "5"}, (), 1.0)
    assert [s.name for s in secret_store.list_secrets("f")] == ["B", "_a", "aB", "a_b", "b"]


def test_deleting_a_functions_secrets_leaves_the_others(secret_store):
    secret_store.change_secrets("hello", {"A": "1", "B": "2"}, (), 1.0)
    secret_store.change_secrets("acme/hello", {"A": "3"}, (), 1.0)
    assert secret_store.delete_secrets("hello") == 2
    assert secret_store.delete_secrets("hello") == 0
    assert [s.function for s in secret_store.list_secrets()] == ["acme/hello"]


def test_removing_a_name_that_is_not_there_changes_nothing_else(secret_store):
    secret_store.change_secrets("f", {"A": "1"}, (), 1.0)
    secret_store.change_secrets("f", {}, ("NOPE",), 2.0)
    assert secret_store.list_secrets("f") == [StoredSecret("f", "A", "1", 1.0)]
