DROP TRIGGER IF EXISTS agent_ledger_append_only ON audit_reads;
CREATE TRIGGER agent_ledger_append_only BEFORE UPDATE OR DELETE ON audit_reads
  FOR EACH ROW EXECUTE FUNCTION agent_ledger_refuse_change();
DROP TRIGGER IF EXISTS agent_ledger_append_only ON audit_checkpoints;
CREATE TRIGGER agent_ledger_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
  FOR EACH ROW EXECUTE FUNCTION agent_ledger_refuse_change();
