-- Failed log-ins per user name and client address, shared by every `cloud serve` process of the database.
-- Before this table each process counted in its own memory, so N processes behind a load balancer allowed
-- N times the failures, and `cloud admin user-enable` could not clear the counts of any server.
-- All times come from the database clock (clock_timestamp()), so the servers' clocks do not matter.
CREATE TABLE login_failures (
    username       text NOT NULL,
    client         text NOT NULL,
    -- The newest failures within the window, oldest first. login_attempt() keeps at most the limit, so the
    -- first element is the one whose expiry ends a lock.
    failed_at      timestamptz[] NOT NULL,
    -- When the newest failure was recorded. A row whose newest failure left the window counts nothing and is pruned.
    last_failed_at timestamptz NOT NULL,
    PRIMARY KEY (username, client)
);
CREATE INDEX login_failures_last_failed_at ON login_failures (last_failed_at);

-- Check one log-in attempt of a pair and, unless the pair is locked, record it as a failure in advance.
-- The caller removes the record again when the password turns out right (or the user disabled), so concurrent
-- attempts cannot pass the limit between a check and a later count. The pair's row stays locked only until the
-- calling statement's transaction ends, which the server keeps to this one statement, not the password hash.
-- allowed: false when the pair already has p_limit failures within the window (nothing is recorded then).
-- failures: failures of the pair within the window, counting this attempt when it was recorded.
-- retry_after_s: whole seconds until the pair is unlocked, set once failures reaches p_limit.
-- attempt_at: the time recorded for this attempt, which identifies it for removal.
CREATE FUNCTION login_attempt(p_username text, p_client text, p_limit integer, p_window_s double precision,
                              OUT allowed boolean, OUT failures integer, OUT retry_after_s integer, OUT attempt_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    kept timestamptz[];
BEGIN
    IF p_limit < 1 OR p_window_s <= 0 THEN
        RAISE EXCEPTION 'login_attempt: limit % and window % s must be positive', p_limit, p_window_s;
    END IF;
    LOOP
        SELECT f.failed_at INTO kept FROM login_failures f WHERE f.username = p_username AND f.client = p_client FOR UPDATE;
        attempt_at := clock_timestamp();
        IF FOUND THEN
            kept := ARRAY(SELECT t FROM unnest(kept) AS t WHERE t > attempt_at - make_interval(secs => p_window_s) ORDER BY t);
            allowed := cardinality(kept) < p_limit;
            IF allowed THEN
                kept := kept || attempt_at;
                UPDATE login_failures SET failed_at = kept, last_failed_at = attempt_at WHERE username = p_username AND client = p_client;
            END IF;
            EXIT;
        END IF;
        -- No row yet. Another attempt of the same pair may insert it first, and then the loop locks that row.
        INSERT INTO login_failures (username, client, failed_at, last_failed_at) VALUES (p_username, p_client, ARRAY[attempt_at], attempt_at)
        ON CONFLICT (username, client) DO NOTHING;
        IF FOUND THEN
            kept := ARRAY[attempt_at];
            allowed := true;
            EXIT;
        END IF;
    END LOOP;
    failures := cardinality(kept);
    IF failures >= p_limit THEN
        -- The lock ends when the oldest of the newest p_limit failures leaves the window.
        retry_after_s := greatest(1, ceil(extract(epoch FROM kept[failures - p_limit + 1] - attempt_at) + p_window_s))::integer;
    END IF;
END
$$;
