-- Residents' personal and health data (name, phone, emergency contacts, medical notes),
-- which China's PIPL treats as sensitive: kept only encrypted, shown only to someone
-- entitled to it, every showing logged, and erasable on request (docs/residents.md).
--
-- The database never sees the data in clear nor a key that opens it. Each row's data
-- is sealed under a data key of its own; the data key is stored wrapped by one of the
-- operator's key-encryption keys (ANJU_RESIDENT_KEYS), named by personal_key_id so
-- keys can be rotated one row at a time. The three columns are one value: a row holds
-- all of them or none, because a ciphertext without its wrapped key (or the reverse)
-- can never be read again.

ALTER TABLE residents
    ADD COLUMN personal_key_id       text,
    ADD COLUMN personal_wrapped_key  bytea,
    ADD COLUMN personal_ciphertext   bytea,
    ADD COLUMN updated_at            timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN erased_at             timestamptz,
    ADD CONSTRAINT residents_personal_data_whole CHECK (
        (personal_key_id IS NULL) = (personal_wrapped_key IS NULL)
        AND (personal_key_id IS NULL) = (personal_ciphertext IS NULL)
    ),
    DROP CONSTRAINT residents_status_check,
    ADD CONSTRAINT residents_status_check
        CHECK (status IN ('active', 'moved_out', 'erased')),
    -- Erasure (the deletion right) is final: an erased row carries when it happened and
    -- can never hold personal data again, so a later upsert that would revive it fails
    -- instead of quietly reactivating a person who asked to be forgotten. Erasure
    -- replaces the reference by 'erased-{id}'; live references may not take that form,
    -- so the replacement cannot collide with one.
    ADD CONSTRAINT residents_erased_when CHECK ((status = 'erased') = (erased_at IS NOT NULL)),
    ADD CONSTRAINT residents_erased_holds_nothing
        CHECK (status <> 'erased' OR personal_ciphertext IS NULL),
    ADD CONSTRAINT residents_erased_reference
        CHECK (status = 'erased' OR reference NOT LIKE 'erased-%');

-- Who saw a resident's personal data, when, why, and under which incident: one row per
-- decryption, written in the transaction that decrypts, so no showing goes unrecorded.
-- The row outlives erasure (it holds no personal data, and the subject may ask who saw
-- theirs). api_key_id has no foreign key: a revoked or deleted key must not take the
-- record of what it was used for with it, and actor and role are copied for that reason.
CREATE TABLE resident_access_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    resident_id  bigint NOT NULL REFERENCES residents (id),
    incident_id  bigint REFERENCES incidents (id),
    api_key_id   bigint,
    actor        text NOT NULL,
    role         text NOT NULL,
    purpose      text NOT NULL
);
CREATE INDEX resident_access_log_resident ON resident_access_log (resident_id, at);

-- A wearable belongs to a person: its fall or SOS incident is about the device, and the
-- dispatcher holding it needs to see whose it is. NULL for shared devices.
ALTER TABLE devices
    ADD COLUMN resident_id bigint CONSTRAINT devices_resident_fkey REFERENCES residents (id);
