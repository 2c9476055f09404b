CREATE OR REPLACE FUNCTION agent_ledger_refuse_change() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'the event store is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS agent_ledger_append_only ON ${events_table};
CREATE TRIGGER agent_ledger_append_only BEFORE UPDATE OR DELETE ON ${events_table}
  FOR EACH ROW EXECUTE FUNCTION agent_ledger_refuse_change();
DROP TRIGGER IF EXISTS agent_ledger_no_truncate ON ${events_table};
CREATE TRIGGER agent_ledger_no_truncate BEFORE TRUNCATE ON ${events_table}
  FOR EACH STATEMENT EXECUTE FUNCTION agent_ledger_refuse_change();
