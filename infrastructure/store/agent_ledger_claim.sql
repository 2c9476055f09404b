CREATE OR REPLACE FUNCTION agent_ledger_claim(
  owner text, now_ float8, expires float8, per_user int, wanted int)
RETURNS TABLE (claimed_id uuid, previous_owner text) LANGUAGE plpgsql AS $$
BEGIN
  -- a lease lost in a crash of the database is a lease that ran out: another worker claims
  -- the execution and this one's fenced writes fail; and this worker's first write, a
  -- synchronous commit, makes the claim durable with it. So the claim need not wait for
  -- its own flush to disk.
  SET LOCAL synchronous_commit TO OFF;
  PERFORM pg_advisory_xact_lock(${admission_lock});
  ${admit};
  RETURN QUERY
    WITH picked AS (${pick} FOR UPDATE SKIP LOCKED),
    leased AS (
      UPDATE ${work_table} AS w SET lease_owner = owner, lease_expires_at = expires,
        waiting = FALSE
      FROM picked WHERE w.execution_id = picked.execution_id
      RETURNING w.execution_id)
    SELECT picked.execution_id, picked.lease_owner
    FROM picked JOIN leased ON leased.execution_id = picked.execution_id
    ORDER BY picked.ready_at, picked.seq;
END $$
