import { useState } from 'preact/hooks';
import { signIn, type Session } from '../api.js';

/** The auditor token is sent once, to `POST /console/session`, and never kept: the session cookie replaces it. */
export function SignIn({ onSignedIn }: { onSignedIn: (session: Session) => void }) {
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = (event: SubmitEvent) => {
    event.preventDefault();
    const form = event.currentTarget as HTMLFormElement;
    const input = form.elements.namedItem('token') as HTMLInputElement;
    setBusy(true);
    signIn(input.value).then(
      (session) => {
        input.value = '';
        onSignedIn(session);
      },
      (err: unknown) => {
        setError(err instanceof Error ? err.message : 'Sign-in failed.');
        setBusy(false);
        input.focus();
      },
    );
  };

  return (
    <main class="sign-in">
      <h1>oidc-broker console</h1>
      <form onSubmit={submit} aria-describedby="sign-in-help">
        <label for="token">Auditor token</label>
        <input id="token" name="token" type="password" autocomplete="off" required autofocus />
        <p id="sign-in-help" class="help">
          The bearer token of an auditor in the broker's config (<code>auditors</code>). It is exchanged for a session cookie and not stored.
        </p>
        {error !== null && (
          <p role="alert" class="error">
            {error}
          </p>
        )}
        <button type="submit" disabled={busy}>
          Sign in
        </button>
      </form>
    </main>
  );
}
