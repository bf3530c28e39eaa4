import { useCallback, useEffect, useState } from 'preact/hooks';
import { ApiError, getSession, signOut, type Session } from './api.js';
import { readState, viewUrl, type View, type ViewState } from './url-state.js';
import { ChainBadge } from './views/chain-badge.js';
import { DashboardView } from './views/dashboard.js';
import { LogView } from './views/log.js';
import { PlaygroundView } from './views/playground.js';
import { PoliciesView } from './views/policies.js';
import { RecordView } from './views/record.js';
import { SignIn } from './views/sign-in.js';

const VIEW_LINKS: [View, string][] = [
  ['log', 'Log'],
  ['dashboard', 'Dashboard'],
  ['policies', 'Policies'],
  ['playground', 'Playground'],
];

function page(state: ViewState, navigate: (state: ViewState) => void, onError: (err: unknown) => void) {
  if (state.record !== null) return <RecordView state={state} navigate={navigate} onError={onError} />;
  if (state.view === 'dashboard') return <DashboardView state={state} navigate={navigate} onError={onError} />;
  if (state.view === 'policies') return <PoliciesView state={state} navigate={navigate} onError={onError} />;
  if (state.view === 'playground') return <PlaygroundView onError={onError} />;
  return <LogView state={state} navigate={navigate} onError={onError} />;
}

/** The console: sign-in until a session exists, then the chain badge and the view the URL names. */
export function App() {
  // undefined: not known yet; null: signed out.
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  const [state, setState] = useState<ViewState>(() => readState(location.search));

  useEffect(() => {
    getSession().then(setSession, () => setSession(null));
    const onPop = () => setState(readState(location.search));
    addEventListener('popstate', onPop);
    return () => removeEventListener('popstate', onPop);
  }, []);

  const navigate = useCallback((next: ViewState) => {
    history.pushState(null, '', viewUrl(next));
    setState(next);
    scrollTo(0, 0);
  }, []);

  /** A 401 from the API means the session ended (expired, or the key rotated): back to sign-in, the URL kept. */
  const onError = useCallback((err: unknown) => {
    if (err instanceof ApiError && err.status === 401) setSession(null);
  }, []);

  if (session === undefined) return <p class="loading">Loading…</p>;
  if (session === null) return <SignIn onSignedIn={setSession} />;
  return (
    <>
      <header class="top">
        <h1>
          <a href="/console/" onClick={(e) => (e.preventDefault(), navigate(readState('')))}>
            oidc-broker console
          </a>
        </h1>
        <ChainBadge onError={onError} />
        <p class="who">
          Signed in as <bdi>{session.auditor}</bdi>
          <button type="button" onClick={() => void signOut().finally(() => setSession(null))}>
            Sign out
          </button>
        </p>
      </header>
      <nav class="views" aria-label="Views">
        {VIEW_LINKS.map(([view, label]) => {
          const target: ViewState = { ...state, view, open: null, cursor: null, record: null };
          return (
            <a href={viewUrl(target)} aria-current={state.view === view && state.record === null ? 'page' : undefined} onClick={(e) => (e.preventDefault(), navigate(target))}>
              {label}
            </a>
          );
        })}
      </nav>
      <main>{page(state, navigate, onError)}</main>
    </>
  );
}
