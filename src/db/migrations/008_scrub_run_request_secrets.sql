-- Run requests stored before src/db/run-input-secrets.ts kept secret-named values other than a few
-- fixed keys in clear (a scorer_config.access_token, a runtime_spec env token). This scrubs them:
-- every non-empty string under a secret-named key becomes "[REDACTED]". The name test mirrors
-- isSecretName (src/domain/secret-redaction.ts). The functions are session-local (pg_temp) and dropped at the end.
-- A run in flight during the upgrade loses the credentials of its agent's runtime_spec: stored in
-- clear, they cannot be sealed here (the key is the workers' config, not the database's).

CREATE FUNCTION pg_temp.agentbench_is_secret_name(name TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  words TEXT[];
BEGIN
  words := array_remove(
    regexp_split_to_array(
      lower(regexp_replace(regexp_replace(name, '([a-z0-9])([A-Z])', '\1 \2', 'g'), '([A-Z]+)([A-Z][a-z])', '\1 \2', 'g')),
      '[^a-z0-9]+'
    ),
    ''
  );
  IF coalesce(array_length(words, 1), 0) = 0 OR words && ARRAY[
    'count', 'counts', 'max', 'min', 'num', 'number', 'limit', 'limits', 'total', 'usage', 'length',
    'len', 'size', 'budget', 'type', 'kind', 'mode', 'method', 'scheme', 'url', 'uri', 'endpoint',
    'name', 'file', 'path', 'env', 'enabled', 'required', 'ttl', 'expires', 'expiry', 'timeout'
  ] THEN
    RETURN FALSE;
  END IF;
  IF words && ARRAY[
    'password', 'passwd', 'pwd', 'passphrase', 'secret', 'secrets', 'token', 'credential',
    'credentials', 'auth', 'authorization', 'cookie', 'bearer', 'apikey', 'signature'
  ] THEN
    RETURN TRUE;
  END IF;
  IF array_length(words, 1) = 1 AND words[1] IN ('key', 'keys') THEN
    RETURN TRUE;
  END IF;
  RETURN array_to_string(words, '') ~ '(apikey|accesskey|privatekey|secretkey|signingkey|encryptionkey|masterkey|accesstoken|refreshtoken)';
END $$;

-- `under_secret`: v is the value (or inside a list that is the value) of a secret-named key.
CREATE FUNCTION pg_temp.agentbench_scrub_secrets(v JSONB, under_secret BOOLEAN) RETURNS JSONB
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  k TEXT;
  item JSONB;
  result JSONB := '{}'::jsonb;
BEGIN
  CASE jsonb_typeof(v)
    WHEN 'string' THEN
      RETURN CASE WHEN under_secret AND v <> '""'::jsonb THEN '"[REDACTED]"'::jsonb ELSE v END;
    WHEN 'array' THEN
      RETURN coalesce(
        (SELECT jsonb_agg(pg_temp.agentbench_scrub_secrets(e, under_secret) ORDER BY i)
           FROM jsonb_array_elements(v) WITH ORDINALITY AS t(e, i)),
        '[]'::jsonb
      );
    WHEN 'object' THEN
      FOR k, item IN SELECT key, value FROM jsonb_each(v) LOOP
        result := result || jsonb_build_object(
          k,
          pg_temp.agentbench_scrub_secrets(
            item,
            pg_temp.agentbench_is_secret_name(k) AND jsonb_typeof(item) IN ('string', 'array')
          )
        );
      END LOOP;
      RETURN result;
    ELSE
      RETURN v;
  END CASE;
END $$;

UPDATE agentbench_run_requests
   SET request = pg_temp.agentbench_scrub_secrets(request, FALSE)
 WHERE request IS DISTINCT FROM pg_temp.agentbench_scrub_secrets(request, FALSE);

DROP FUNCTION pg_temp.agentbench_scrub_secrets(JSONB, BOOLEAN);
DROP FUNCTION pg_temp.agentbench_is_secret_name(TEXT);
