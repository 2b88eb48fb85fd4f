//! One `[[server]]` as a worker serves it: its pool, its route table and the worker state,
//! built once at start-up from the configuration. The stages after accept read these, never
//! the configuration.

use std::rc::Rc;

use rproxy_shared::cidr::Cidr;
use rproxy_shared::config::Config;

use crate::access_log::AccessLog;
use crate::pool::Pool;
use crate::route::RouteTable;
use crate::state::WorkerState;

/// Everything the connections of one `[[server]]` share.
pub struct ServerCtx {
    /// Position in `config.server`, for messages.
    pub index: usize,
    pub pool: Rc<Pool>,
    pub routes: RouteTable,
    /// `trusted-proxies`: peers whose X-Forwarded-For is kept and appended to.
    pub trusted: Vec<Cidr>,
    /// The largest request head (hyper's buffer, the framing guard's limit).
    pub max_head: usize,
    pub state: Rc<WorkerState>,
}

impl ServerCtx {
    /// Build server `index` of `config` and start its pool's connections (on the current
    /// `LocalSet`). Its access logs (the server's and its vhosts') join the worker's, for
    /// flushing and reopening. Fails only when the rule sets exceed the regex size limit.
    pub fn start(
        config: &Config,
        index: usize,
        state: &Rc<WorkerState>,
    ) -> Result<Rc<ServerCtx>, String> {
        let cfg = &config.servers[index];
        let log = AccessLog::new(config, cfg.logging.as_ref(), state);
        let routes = RouteTable::build(config, cfg, log, state)
            .map_err(|e| format!("server[{index}]: cannot compile the routes: {e}"))?;
        let pool = Pool::new(index, cfg);
        // Before any connection is opened: a downstream in `maint` opens none.
        for &(server, downstream, admin) in state.admin_at_start.iter() {
            if server == index && !pool.set_admin(downstream, admin) {
                rproxy_shared::warn!(
                    "server[{index}]: no downstream {downstream} to set {}",
                    admin.name()
                );
            }
        }
        pool.start();
        crate::metrics::add_pool(index, &pool);
        state.pools.borrow_mut().push(Rc::clone(&pool));
        state
            .access_logs
            .borrow_mut()
            .extend(routes.logs().cloned());
        Ok(Rc::new(ServerCtx {
            index,
            pool,
            routes,
            trusted: cfg.trusted_proxies.clone(),
            max_head: cfg.max_header_size,
            state: Rc::clone(state),
        }))
    }
}
