-- Windowed rules (burst, tailgating) decide once their window plus the rule's allowed
-- lateness has passed, on committed data (cloud/rules/checker.py): ingest records one
-- check per event that such a rule must judge, in the transaction that stores the
-- event, and a checker in every ingest process takes due checks with FOR UPDATE SKIP
-- LOCKED, opens or joins the incident the rule calls for and deletes the check, in one
-- transaction. A check therefore exists exactly when its event is committed and is
-- judged once, whichever process takes it.
--
-- `rule` is the rule's name in the rule file: the checker applies the rule as the
-- event's community has it when the check is due (a rule disabled meanwhile decides
-- nothing). Events are never deleted today; the cascade keeps a future retention job
-- from tripping over a pending check.
CREATE TABLE rule_checks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule        text NOT NULL,
    event_id    bigint NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    due_at      timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rule_checks_due ON rule_checks (due_at);
