CREATE OR REPLACE FUNCTION agent_ledger_append(
  fence_ids uuid[], fence_owners text[], enqueue_ids uuid[], enqueue_users text[],
  change_kinds text[], change_ids uuid[], change_times float8[], finish_ids uuid[],
  ids uuid[], versions int8[], topics text[], states bytea[], now_ float8)
RETURNS SETOF int8 LANGUAGE plpgsql AS $$
DECLARE
  lost uuid;
  queued boolean;
  positions int8[];
  notice text;
BEGIN
  SELECT f.id INTO lost FROM unnest(fence_ids, fence_owners) AS f(id, owner)
  WHERE NOT EXISTS (SELECT 1 FROM ${work_table} w
                    WHERE w.execution_id = f.id AND w.lease_owner = f.owner) LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION '${lease_lost} on %', lost;
  END IF;
  IF cardinality(enqueue_ids) > 0 THEN
    INSERT INTO ${work_table} (execution_id, user_id, ready_at)
      SELECT e.id, e.user_id, now_ FROM unnest(enqueue_ids, enqueue_users) AS e(id, user_id)
      ON CONFLICT (execution_id) DO NOTHING;
    PERFORM pg_notify('${work_channel}', '');
  END IF;
  -- in the order they were made: a reschedule and a wake-up of one execution do not commute
  FOR i IN 1 .. coalesce(cardinality(change_kinds), 0) LOOP
    CASE change_kinds[i]
      WHEN 'reschedule' THEN
        UPDATE ${work_table} SET ready_at = change_times[i] WHERE execution_id = change_ids[i];
      WHEN 'release' THEN
        UPDATE ${work_table} SET ready_at = change_times[i], lease_owner = NULL,
          lease_expires_at = NULL WHERE execution_id = change_ids[i];
      WHEN 'park' THEN
        -- a parked execution frees its user's slot: a worker admits the next one waiting
        UPDATE ${work_table} SET ready_at = change_times[i], waiting = TRUE, lease_owner = NULL,
          lease_expires_at = NULL WHERE execution_id = change_ids[i];
        PERFORM pg_notify('${work_channel}', '');
      WHEN 'wake' THEN
        -- a parked execution takes its turn again within its user's limit (first in line)
        UPDATE ${work_table} SET ready_at = LEAST(ready_at, change_times[i]),
          admitted = admitted AND NOT waiting, waiting = FALSE
          WHERE execution_id = change_ids[i];
        PERFORM pg_notify('${work_channel}', '');
      WHEN 'cancel' THEN
        UPDATE ${work_table} SET ready_at = LEAST(ready_at, change_times[i]),
          cancel_requested = TRUE, waiting = FALSE WHERE execution_id = change_ids[i];
        PERFORM pg_notify('${work_channel}', change_ids[i]::text);
    END CASE;
  END LOOP;
  IF cardinality(finish_ids) > 0 THEN
    -- an ended execution frees its user's slot: a worker admits the next one waiting
    WITH ended AS (DELETE FROM ${work_table} WHERE execution_id = ANY(finish_ids)
                   RETURNING user_id)
    SELECT EXISTS (SELECT 1 FROM ${work_table} w
                   WHERE NOT w.admitted AND w.user_id IN (SELECT user_id FROM ended))
      INTO queued;
    IF queued THEN
      PERFORM pg_notify('${work_channel}', '');
    END IF;
  END IF;
  IF cardinality(ids) > 0 THEN
    SET LOCAL lock_timeout = '${lock_timeout}s';
    LOCK TABLE ${events_table} IN EXCLUSIVE MODE;
    WITH inserted AS (
      INSERT INTO ${events_table} (originator_id, originator_version, topic, state)
      SELECT * FROM unnest(ids, versions, topics, states)
      RETURNING notification_id)
    SELECT array_agg(notification_id ORDER BY notification_id) INTO positions FROM inserted;
    -- the notice says up to where, and which topics: a reader that wants none of them
    -- need not read (commits, hence notices, come in position order under the lock)
    SELECT positions[cardinality(positions)]::text || ' ' || string_agg(DISTINCT t, ',')
      INTO notice FROM unnest(topics) AS t;
    IF octet_length(notice) > ${notice_limit} THEN
      notice := positions[cardinality(positions)]::text;
    END IF;
    PERFORM pg_notify('${events_channel}', notice);
    RETURN QUERY SELECT unnest(positions);
  END IF;
END $$
